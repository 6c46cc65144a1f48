using System.Net;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.BuildingBlocks.Errors;
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
    public async Task Tallies_page_through_a_tenants_conversations_with_messages_in_id_order()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var ids = new List<Guid>();
        foreach (var count in new[] { 3, 0, 2 })
        {
            var c = await (await client.PostJson("/api/conversations", new { title = "tally" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
            if (count > 0)
            {
                var batch = Enumerable.Range(1, count).Select(i => new { role = "user", content = $"message {i}" });
                await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = batch })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
                ids.Add(c.Id);
            }
        }

        var all = await Messages.ListTalliesAsync(tenant, null, 10);
        var first = await Messages.ListTalliesAsync(tenant, null, 1);
        var second = await Messages.ListTalliesAsync(tenant, (tenant, first[0].ConversationId), 1);
        var none = await Messages.ListTalliesAsync(tenant, (tenant, second[0].ConversationId), 1);

        // The empty conversation is left out; counts and tokens are the conversation's own.
        Assert.Equal(ids.Order(), all.Select(t => t.ConversationId));
        Assert.All(all, t => Assert.Equal(tenant, t.TenantId));
        foreach (var tally in all)
        {
            var info = (await Messages.FindAsync(tenant, tally.ConversationId))!;
            Assert.Equal((info.MessageCount, info.TotalTokens), (tally.MessageCount, tally.TotalTokens));
            Assert.True((info.LastActivityAt - tally.LastActivityAt).Duration() < TimeSpan.FromMicroseconds(1)); // PostgreSQL keeps microseconds
        }

        Assert.Equal(all.Select(t => t.ConversationId), first.Concat(second).Select(t => t.ConversationId));
        Assert.Empty(none);
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

    [Fact]
    public async Task A_server_side_append_refuses_another_message_under_a_known_external_id_unless_the_first_stored_wins()
    {
        var (tenant, id) = await ConversationWith(1);
        var first = await Messages.AppendAsync(tenant, id, [new NewConversationMessage(MessageRole.Assistant, "The first run's answer", "turn-1:answer")]);

        var conflict = await Assert.ThrowsAsync<ConflictException>(
            () => Messages.AppendAsync(tenant, id, [new NewConversationMessage(MessageRole.Assistant, "The second run's answer", "turn-1:answer")]));
        Assert.Equal(2L, conflict.Extensions["sequence"]);
        var raced = await Messages.AppendAsync(
            tenant, id, [new NewConversationMessage(MessageRole.Assistant, "The second run's answer", "turn-1:answer")], firstStoredWins: true);

        Assert.Equal((first.Single().MessageId, 2L, true), (raced.Single().MessageId, raced.Single().Sequence, raced.Single().Duplicate));
        Assert.Equal("The first run's answer", (await Messages.ReadLatestAsync(tenant, id, 1)).Single().Content);
    }

    [Fact]
    public async Task When_the_first_stored_wins_nothing_of_a_later_run_is_stored_not_even_messages_the_first_run_had_not()
    {
        // Two runs of one chat turn: the first used one tool and was stored; the second used two and finished later.
        var (tenant, id) = await ConversationWith(1);
        NewConversationMessage Tool(string externalId, string content) => new(MessageRole.Tool, content, externalId);
        var first = await Messages.AppendAsync(tenant, id,
            [Tool("turn-1:call:1", "weather(Lisbon)"), Tool("turn-1:result:1", "sunny"), new(MessageRole.Assistant, "It is sunny.", "turn-1:answer")],
            firstStoredWins: true);

        var raced = await Messages.AppendAsync(tenant, id,
            [Tool("turn-1:call:1", "weather(Lisbon)"), Tool("turn-1:call:2", "weather(Porto)"), Tool("turn-1:result:1", "sunny"),
             Tool("turn-1:result:2", "rainy"), new(MessageRole.Assistant, "Sunny in Lisbon, rainy in Porto.", "turn-1:answer")],
            firstStoredWins: true);

        Assert.All(raced, m => Assert.True(m.Duplicate));
        Assert.Equal([first[0].Sequence, 0, first[1].Sequence, 0, first[2].Sequence], raced.Select(m => m.Sequence));
        Assert.Equal(first[2].MessageId, raced[^1].MessageId);
        Assert.Equal(4, (await Messages.FindAsync(tenant, id))!.MessageCount);
        Assert.Equal(["message 1", "weather(Lisbon)", "sunny", "It is sunny."], (await Messages.ReadLatestAsync(tenant, id, 10)).Select(m => m.Content));
        Assert.Null(await Messages.FindByExternalIdAsync(tenant, id, "turn-1:call:2"));
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
