using System.Net;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Tests;

/// <summary>The contract other modules use to read and write conversations.</summary>
[Collection(AppCollection.Name)]
public sealed class ConversationMessagesContractTests(ConversationsApp app)
{
    private IConversationMessages Messages => app.Host.Services.GetRequiredService<IConversationMessages>();

    [Fact]
    public async Task Chunks_come_in_order_within_the_range_and_never_larger_than_asked()
    {
        var (tenant, id) = await ConversationWith(23);

        var chunks = new List<IReadOnlyList<ConversationMessage>>();
        await foreach (var chunk in Messages.ReadChunksAsync(tenant, id, afterSequence: 2, upToSequence: 20, chunkSize: 5))
        {
            chunks.Add(chunk);
        }

        Assert.Equal(new[] { 5, 5, 5, 3 }, chunks.Select(c => c.Count));
        Assert.Equal(Enumerable.Range(3, 18).Select(i => (long)i), chunks.SelectMany(c => c).Select(m => m.Sequence));
        Assert.Equal("message 3", chunks[0][0].Content);
    }

    [Fact]
    public async Task The_latest_messages_come_oldest_first()
    {
        var (tenant, id) = await ConversationWith(10);

        var latest = await Messages.ReadLatestAsync(tenant, id, 3);
        var earlier = await Messages.ReadLatestAsync(tenant, id, 3, beforeSequence: 5);

        Assert.Equal(new long[] { 8, 9, 10 }, latest.Select(m => m.Sequence));
        Assert.Equal(new long[] { 2, 3, 4 }, earlier.Select(m => m.Sequence));
    }

    [Fact]
    public async Task Another_tenant_finds_nothing()
    {
        var (tenant, id) = await ConversationWith(2);

        Assert.NotNull(await Messages.FindAsync(tenant, id));
        Assert.Null(await Messages.FindAsync("someone-else", id));
        Assert.Empty(await Messages.ReadLatestAsync("someone-else", id, 10));
    }

    [Fact]
    public async Task A_server_side_append_follows_the_api_rules()
    {
        var (tenant, id) = await ConversationWith(1);

        var appended = await Messages.AppendAsync(tenant, id, [new NewConversationMessage(MessageRole.Assistant, "Hello from the model", "reply-1")]);
        var again = await Messages.AppendAsync(tenant, id, [new NewConversationMessage(MessageRole.Assistant, "Hello from the model", "reply-1")]);

        Assert.Equal(2, appended.Single().Sequence);
        Assert.True(again.Single().Duplicate);
        var info = await Messages.FindAsync(tenant, id);
        Assert.Equal(2, info!.MessageCount);
        await Assert.ThrowsAnyAsync<Exception>(() => Messages.AppendAsync("someone-else", id, [new NewConversationMessage(MessageRole.User, "x")]));
    }

    private async Task<(string Tenant, Guid Id)> ConversationWith(int messages)
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var c = await (await client.PostJson("/api/conversations", new { title = "contract" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var batch = Enumerable.Range(1, messages).Select(i => new { role = "user", content = $"message {i}" });
        await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = batch })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        return (tenant, c.Id);
    }
}
