using System.Net;

namespace ModularChat.Conversations.Tests;

/// <summary>A host with the service's own limits (100,000 characters a message, 16 MiB a request), which the shared host lowers.</summary>
public sealed class DefaultLimitsApp() : ModularChatApp(TestDatabase("conversations_default_limits"))
{
    protected override bool RunsAsyncProjections => false;
}

/// <summary>
/// Messages the o200k pre-tokenizer keeps as one piece are stored with their token counts. Counting one such
/// 100,000-character message took 5-37 s while the tokenizer's byte-pair merge was quadratic in a piece's length, so a
/// batch of them held a request for minutes (a 16 MiB batch could hold ~160).
/// </summary>
public sealed class LongMessageTokenCountTests(DefaultLimitsApp app) : IClassFixture<DefaultLimitsApp>
{
    [Fact]
    public async Task Messages_of_100000_characters_without_a_space_are_stored_with_their_token_counts()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();

        var single = await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = new string('日', 100_000) }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        var contents = new[] { new string('語', 100_000), new string('a', 100_000), string.Concat(Enumerable.Repeat("😀", 50_000)), new string('!', 100_000) };
        var batch = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = contents.Select(content => new { role = "user", content }) }))
            .ReadAs<BatchResponseDto>(HttpStatusCode.Created);

        Assert.Equal(50_000, single.TokenCount);
        Assert.All(batch.Messages, m => Assert.InRange(m.TokenCount, 1, 100_000));
        var page = await (await client.GetAsync($"/api/conversations/{c.Id}/messages?limit=10")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal(batch.Messages.Select(m => m.TokenCount).Prepend(single.TokenCount), page.Items.Select(m => m.TokenCount));
        var conversation = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(page.Items.Sum(m => (long)m.TokenCount), conversation.TotalTokens);
    }
}
