using System.Net;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using StackExchange.Redis;

namespace ModularChat.Conversations.Tests;

[Collection(AppCollection.Name)]
public sealed class ContextTests(ConversationsApp app)
{
    private const int PerMessage = 4; // Context:TokensPerMessage

    [Fact]
    public async Task The_context_holds_the_most_recent_messages_that_fit_oldest_first_and_never_exceeds_the_budget()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var (id, messages) = await ConversationWith(client, 12);

        // Room for the last three messages exactly, and a few tokens to spare.
        var lastThree = messages.TakeLast(3).Sum(m => m.TokenCount + PerMessage);
        var context = await Context(client, id, lastThree + 2);

        Assert.Equal(messages.TakeLast(3).Select(m => m.Sequence), context.Messages.Select(m => m.Sequence));
        Assert.Equal(lastThree, context.TotalTokens);
        Assert.True(context.TotalTokens <= context.MaxTokens);
        Assert.Equal((10L, 12L, 12L), (context.Coverage.MessagesFrom!.Value, context.Coverage.MessagesTo!.Value, context.Coverage.MessageCount));
        Assert.False(context.Coverage.Complete);
        Assert.Null(context.Summary);
    }

    [Fact]
    public async Task A_large_budget_gives_the_whole_conversation()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var (id, messages) = await ConversationWith(client, 5);

        var context = await Context(client, id, 100_000);

        Assert.Equal(messages.Select(m => m.Content), context.Messages.Select(m => m.Content));
        Assert.Equal(messages.Sum(m => m.TokenCount + PerMessage), context.TotalTokens);
        Assert.True(context.Coverage.Complete);
    }

    [Fact]
    public async Task A_budget_too_small_for_any_message_gives_an_empty_context()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var (id, _) = await ConversationWith(client, 3);

        var context = await Context(client, id, 1);

        Assert.Empty(context.Messages);
        Assert.Equal(0, context.TotalTokens);
    }

    [Theory]
    [InlineData("maxTokens=0")]
    [InlineData("maxTokens=-5")]
    [InlineData("maxTokens=abc")]
    [InlineData("maxTokens=2000000")]
    public async Task A_bad_budget_answers_400(string query)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var (id, _) = await ConversationWith(client, 1);
        var problem = await (await client.GetAsync($"/api/conversations/{id}/context?{query}")).ShouldBeProblem(400);
        Assert.Contains("maxTokens", problem.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Another_tenants_conversation_has_no_context()
    {
        using var owner = app.Client(ModularChatApp.NewUser());
        using var stranger = app.Client(ModularChatApp.NewUser());
        var (id, _) = await ConversationWith(owner, 2);
        await (await stranger.GetAsync($"/api/conversations/{id}/context")).ShouldBeProblem(404);
    }

    [Fact]
    public async Task Reading_the_context_of_conversations_that_do_not_exist_leaves_nothing_in_redis()
    {
        var user = ModularChatApp.NewUser("made-up-ids");
        using var client = app.Client(user);
        var ids = Enumerable.Range(0, 5).Select(_ => Guid.NewGuid()).ToList();
        foreach (var id in ids)
        {
            foreach (var budget in new[] { 500, 3000, 100_000 })
            {
                await (await client.GetAsync($"/api/conversations/{id}/context?maxTokens={budget}")).ShouldBeProblem(404);
            }
        }

        // Each made-up id used to leave its generation (kept a day), the list of its entries and a cached "not found" per
        // budget window in the Redis every tenant shares: a caller could fill it with reads.
        await Task.Delay(500); // HybridCache writes to Redis after it answers
        Assert.Equal(0, await KeysInRedis($"modularchat:*{user}*"));

        // One that exists has its context cached as before.
        var (real, _) = await ConversationWith(client, 2);
        (await client.GetAsync($"/api/conversations/{real}/context")).EnsureSuccessStatusCode();
        await Eventually.Until(() => ContextKeysInRedis(user, real), n => n > 0, seconds: 30, what: "The context never reached Redis");
    }

    [Fact]
    public async Task A_second_node_sees_the_new_context_right_after_a_write_on_the_first()
    {
        await using var second = await app.StartHostAsync();
        var user = ModularChatApp.NewUser();
        using var first = app.Client(user);
        using var other = ClientOf(second, user);
        var (id, _) = await ConversationWith(first, 3);

        // Both nodes cache the context...
        Assert.Equal(3, (await Context(first, id, 10_000)).Messages.Count);
        Assert.Equal(3, (await Context(other, id, 10_000)).Messages.Count);

        // ...a write on one node is visible on the other at once, and the other way round.
        await (await first.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "written on node one" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        var seenByTwo = await Context(other, id, 10_000);
        Assert.Equal("written on node one", seenByTwo.Messages[^1].Content);

        await (await other.PostJson($"/api/conversations/{id}/messages", new { role = "assistant", content = "written on node two" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        var seenByOne = await Context(first, id, 10_000);
        Assert.Equal("written on node two", seenByOne.Messages[^1].Content);
        Assert.Equal(5, seenByOne.Messages.Count);
    }

    [Fact]
    public async Task Repeated_reads_are_served_from_the_cache_until_something_changes()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var (id, _) = await ConversationWith(client, 2);
        using var lookups = new CacheLookupRecorder(app.Host);

        await Context(client, id, 5000);
        await Context(client, id, 5000);
        await Context(client, id, 5000);
        await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "a change" });
        var after = await Context(client, id, 5000);

        Assert.Equal(3, after.Messages.Count);
        Assert.Equal(new[] { "miss", "hit", "hit", "miss" }, lookups.Results("context"));
    }

    [Fact]
    public async Task A_context_larger_than_a_mebibyte_is_cached_too_for_the_other_nodes()
    {
        await using var second = await app.StartHostAsync();
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        using var other = ClientOf(second, user);
        var c = await client.NewConversation();
        for (var b = 0; b < 12; b++)
        {
            var batch = Enumerable.Range(1, 50).Select(i => new
            {
                role = "user",
                content = string.Join(' ', Enumerable.Range(0, 200).Select(w => $"word{(b * 50 + i) * 7 + w}")),
            });
            await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = batch })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        }

        // The summaries its milestones made due, and the context invalidations that follow each revision, are done: none
        // moves the generation between the two reads (the second node then read a newer one and missed, under load).
        await Eventually.Until(() => app.PendingEnvelopesAbout([c.Id]), n => n == 0, seconds: Eventually.BackgroundSeconds,
            what: "Work about the conversation still queued");
        using var lookups = new CacheLookupRecorder(app.Host, second);
        var first = await client.GetAsync($"/api/conversations/{c.Id}/context?maxTokens=1000000");
        var size = (await first.Content.ReadAsByteArrayAsync()).Length;
        // HybridCache writes the entry to Redis after it has handed the context back: the other node finds it there once it
        // has landed (a write of more than a mebibyte, on a busy machine not within the next request: "miss", "miss").
        await Eventually.Until(() => ContextKeysInRedis(user, c.Id), n => n > 0, seconds: 30, what: "The context never reached Redis");
        var fromRedis = await Context(other, c.Id, 1_000_000);

        // HybridCache's default limit (1 MiB) kept it out of Redis, with an error logged on every read.
        Assert.True(size > 1024 * 1024, $"The context is {size} bytes");
        Assert.Equal(600, fromRedis.Messages.Count);
        Assert.Equal(new[] { "miss", "hit" }, lookups.Results("context"));
    }

    [Fact]
    public async Task Contexts_of_many_budgets_share_a_few_cache_entries_and_each_is_exactly_what_its_budget_holds()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var (id, _) = await ConversationWith(client, 40);
        // Once summarized (the 25-message milestone's revision covers all 40), nothing changes the context while the budgets are read.
        await Eventually.Until(() => Context(client, id, 5000), c => c.Summary?.ToSequence == 40, seconds: Eventually.BackgroundSeconds, what: "No summary of all 40");
        var uncached = await app.StartHostAsync(new Dictionary<string, string?> { ["Context:CacheEnabled"] = "false" });
        await using var _ = uncached;
        using var reference = ClientOf(uncached, user);

        // 120 budgets, from a few messages' worth to the whole conversation: each its own entry before, in memory and in Redis.
        using var lookups = new CacheLookupRecorder(app.Host, uncached);
        foreach (var budget in Enumerable.Range(1, 120).Select(i => i * 7))
        {
            var cached = await Context(client, id, budget);
            var built = await Context(reference, id, budget); // assembled without any cache
            Assert.Equal(built.Messages.Select(m => m.Sequence), cached.Messages.Select(m => m.Sequence));
            Assert.Equal((built.TotalTokens, built.Summary?.Revision, built.Coverage), (cached.TotalTokens, cached.Summary?.Revision, cached.Coverage));
        }

        // 7 to 840 tokens fall in one window (1,024 tokens): one entry, built once; twice when the invalidation that follows
        // the summary's revision (asynchronous, after the revision is readable) lands during the pass. Before: 120 of each.
        Assert.InRange(lookups.Results("context").Count(r => r == "miss"), 1, 2);
        await Eventually.Until(() => ContextKeysInRedis(user, id, "*:w1024:*"), n => n > 0, seconds: 30, what: "The context never reached Redis");
        Assert.InRange(await ContextKeysInRedis(user, id, "*:w1024:*"), 1, 2);
    }

    [Fact]
    public async Task An_append_changes_the_cached_context_but_not_the_cached_summary()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var (id, _) = await ConversationWith(client, 12);
        await Eventually.Until(() => Context(client, id, 5000), c => c.Summary is not null, seconds: Eventually.BackgroundSeconds, what: "No summary in the context");

        using var lookups = new CacheLookupRecorder(app.Host);
        await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "first change" });
        var first = await Context(client, id, 5000);
        await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "second change" });
        var second = await Context(client, id, 5000);

        Assert.Equal("second change", second.Messages[^1].Content);
        Assert.Equal(first.Summary, second.Summary);
        Assert.Equal(new[] { "miss", "miss" }, lookups.Results("context"));
        Assert.Equal("hit", lookups.Results("summary")[^1]);
    }

    [Fact]
    public async Task Without_Redis_the_context_is_still_served_and_readiness_says_degraded()
    {
        // A node whose Redis is unreachable (nothing listens on port 1).
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["ConnectionStrings:Redis"] = "127.0.0.1:1,connectTimeout=200" });
        var user = ModularChatApp.NewUser();
        using var client = app.Client(node, user);
        var (id, _) = await ConversationWith(client, 2);

        Assert.Equal(2, (await Context(client, id, 5000)).Messages.Count);
        await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "still works" });
        Assert.Equal(3, (await Context(client, id, 5000)).Messages.Count);

        using var anonymous = node.Server.CreateClient();
        var ready = await anonymous.GetAsync("/health/ready");
        using var health = JsonDocument.Parse(await ready.Content.ReadAsStringAsync());
        Assert.Equal("Degraded", health.RootElement.GetProperty("checks").GetProperty("redis").GetProperty("status").GetString());
        Assert.Equal("Healthy", health.RootElement.GetProperty("checks").GetProperty("postgresql").GetProperty("status").GetString());
        // Anyone may ask: the answer names no address, port or client internals (the log has the details).
        var redis = health.RootElement.GetProperty("checks").GetProperty("redis").GetProperty("description").GetString();
        Assert.Equal("Redis is unreachable; see the service's log.", redis);
    }

    [Fact]
    public async Task A_query_adds_matching_earlier_messages_that_the_recent_ones_leave_out_within_the_budget()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "context search" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var batch = Enumerable.Range(1, 8).Select(i => new
        {
            role = i % 2 == 1 ? "user" : "assistant",
            content = i == 2 ? "We booked the ferry to Zanzibar for the second week of June." : $"Message number {i} talks about topic {i * 7}.",
        });
        await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = batch })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);

        // Without a query: no hits. With one (indexing is asynchronous): the Zanzibar message, outside the recent ones.
        Assert.Empty((await Context(client, c.Id, 60)).SearchHits);
        var context = await Eventually.Until(
            async () => await (await client.GetAsync($"/api/conversations/{c.Id}/context?maxTokens=100&query=when%20is%20the%20zanzibar%20ferry"))
                .ReadAs<ContextDto>(HttpStatusCode.OK),
            c => c.SearchHits.Count > 0, seconds: Eventually.BackgroundSeconds, what: "No search hit");

        // Best first; only messages older than the recent ones; a quarter of the budget (Context:SearchTokenShare) at most.
        Assert.Equal(2, context.SearchHits[0].Sequence);
        Assert.Contains("Zanzibar", context.SearchHits[0].Content, StringComparison.Ordinal);
        Assert.NotEmpty(context.Messages);
        Assert.All(context.SearchHits, h => Assert.True(h.Sequence < context.Messages[0].Sequence));
        Assert.True(context.SearchHits.Sum(m => m.TokenCount + PerMessage) <= 25);
        Assert.Equal(context.Messages.Concat(context.SearchHits).Sum(m => m.TokenCount + PerMessage), context.TotalTokens);
        Assert.True(context.TotalTokens <= 100);

        // A budget that holds the whole conversation leaves nothing for search to add.
        var everything = await (await client.GetAsync($"/api/conversations/{c.Id}/context?maxTokens=100000&query=zanzibar")).ReadAs<ContextDto>(HttpStatusCode.OK);
        Assert.Equal(8, everything.Messages.Count);
        Assert.Empty(everything.SearchHits);
    }

    [Fact]
    public async Task A_message_read_both_hot_and_archived_across_a_retention_commit_is_listed_and_found_once()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var c = await (await client.PostJson("/api/conversations", new { title = "snapshots" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var batch = Enumerable.Range(1, 8).Select(i => new
        {
            role = i % 2 == 1 ? "user" : "assistant",
            content = i == 2 ? "We booked the ferry to Pemba for the second week of June." : $"Message number {i} talks about topic {i * 7}.",
        });
        await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = batch })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        const string query = "/context?maxTokens=100&query=when%20is%20the%20pemba%20ferry";
        await Eventually.Until(async () => await (await client.GetAsync($"/api/conversations/{c.Id}{query}")).ReadAs<ContextDto>(HttpStatusCode.OK),
            c => c.SearchHits.Count > 0, seconds: Eventually.BackgroundSeconds, what: "No search hit");

        // Retention moves a message from the hot table to the archive in one transaction, but a request reads the two in
        // separate statements: one that runs across that commit reads the message in both. Here it is in both for good.
        var second = (await client.GetAsync($"/api/conversations/{c.Id}/messages?limit=2")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        var hot = (await second).Items[1];
        await using (var session = app.Host.Services.GetRequiredService<Marten.IDocumentStore>().LightweightSession(tenant))
        {
            session.Store(new ModularChat.Conversations.Domain.ArchivedMessage
            {
                Id = hot.Id, ConversationId = c.Id, Sequence = 2, Role = ModularChat.Conversations.Contracts.MessageRole.Assistant, Content = hot.Content,
                CreatedAt = DateTimeOffset.UtcNow, AppendedAt = DateTimeOffset.UtcNow, TokenCount = 14, ArchivedAt = DateTimeOffset.UtcNow,
            });
            await session.SaveChangesAsync();
        }

        var listed = await (await client.GetAsync($"/api/conversations/{c.Id}/messages?includeArchived=true&limit=50")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal(Enumerable.Range(1, 8).Select(i => (long)i), listed.Items.Select(m => m.Sequence));
        var backward = await (await client.GetAsync($"/api/conversations/{c.Id}/messages?includeArchived=true&direction=backward&limit=50"))
            .ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal(Enumerable.Range(1, 8).Select(i => (long)i).Reverse(), backward.Items.Select(m => m.Sequence));
        var context = await (await client.GetAsync($"/api/conversations/{c.Id}{query}")).ReadAs<ContextDto>(HttpStatusCode.OK);
        Assert.Equal(2, Assert.Single(context.SearchHits, h => h.Sequence == 2).Sequence);
    }

    [Fact]
    public async Task A_message_appended_on_a_node_that_left_Redis_alone_after_a_failed_read_is_in_the_other_nodes_context_at_once()
    {
        await using var nodeA = await app.StartHostAsync();
        var user = ModularChatApp.NewUser();
        using var a = ClientOf(nodeA, user);
        using var b = app.Client(user);
        var (id, _) = await ConversationWith(a, 2);
        Assert.Equal(2, (await Context(b, id, 5000)).Messages.Count); // cached by node B, in its memory and in Redis

        // One Redis command of node A failed (a large read that timed out): for Cache:RedisRetryInterval A reads without Redis.
        var redisOfA = nodeA.Services.GetRequiredService<ModularChat.BuildingBlocks.Caching.RedisAvailability>();
        redisOfA.Failed(new RedisException("a read timed out"));
        Assert.False(redisOfA.Usable);
        await (await a.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "said right after the failed read" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        // Redis itself is fine: the append's bump reached it, and node B no longer serves what it cached before.
        Assert.Equal(3, (await Context(b, id, 5000)).Messages.Count);
    }

    [Fact]
    public async Task A_message_appended_while_Redis_was_away_is_in_every_nodes_context_once_Redis_is_back()
    {
        // Node A reaches Redis through a proxy that can cut it off; the fixture's host (node B) reaches Redis directly.
        var redis = StackExchange.Redis.ConfigurationOptions.Parse(app.RedisConnectionString);
        var (host, port) = redis.EndPoints.Single() switch
        {
            System.Net.DnsEndPoint dns => (dns.Host, dns.Port),
            System.Net.IPEndPoint ip => (ip.Address.ToString(), ip.Port),
            var other => throw new InvalidOperationException($"Unexpected Redis endpoint {other}"),
        };
        await using var proxy = new TcpProxy(host, port);
        redis.EndPoints.Clear();
        redis.EndPoints.Add("127.0.0.1", proxy.Port);
        await using var nodeA = await app.StartHostAsync(new Dictionary<string, string?> { ["ConnectionStrings:Redis"] = redis.ToString() });
        var user = ModularChatApp.NewUser();
        using var a = app.Client(nodeA, user);
        using var b = app.Client(user);
        var (id, _) = await ConversationWith(a, 2);
        Assert.Equal(2, (await Context(a, id, 5000)).Messages.Count); // cached in Redis under the current generation

        proxy.Cut();
        await (await a.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "said while Redis was away" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        Assert.Equal(3, (await Context(a, id, 5000)).Messages.Count); // node A knows (its own generation)
        proxy.Restore();

        // The bump node A could not make is made once Redis answers: no node reads the entry cached before the append.
        await Eventually.Until(() => Context(b, id, 5000), c => c.Messages.Count == 3, seconds: 30, what: "Node B still serves the context cached before the append");
        Assert.Equal(3, (await Context(a, id, 5000)).Messages.Count);
    }

    /// <summary>How many of the conversation's cached contexts (any generation and budget) are in Redis.</summary>
    private Task<int> ContextKeysInRedis(string tenant, Guid conversationId, string rest = "*")
        => KeysInRedis($"modularchat:ctx:conv:{tenant}:{conversationId:N}:{rest}");

    private async Task<int> KeysInRedis(string pattern)
    {
        var redis = app.Host.Services.GetRequiredService<IConnectionMultiplexer>();
        var found = 0;
        foreach (var endpoint in redis.GetEndPoints())
        {
            await foreach (var _ in redis.GetServer(endpoint).KeysAsync(pattern: pattern))
            {
                found++;
            }
        }

        return found;
    }

    /// <summary>A client of another node of the fixture's database, signed in as <paramref name="user"/>.</summary>
    private HttpClient ClientOf(Alba.IAlbaHost node, string user)
    {
        var client = app.Client(node, user);
        return client;
    }

    private static async Task<ContextDto> Context(HttpClient client, Guid id, int maxTokens)
        => await (await client.GetAsync($"/api/conversations/{id}/context?maxTokens={maxTokens}")).ReadAs<ContextDto>(HttpStatusCode.OK);

    private static async Task<(Guid Id, List<MessageDto> Messages)> ConversationWith(HttpClient client, int count)
    {
        var c = await (await client.PostJson("/api/conversations", new { title = "context" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var batch = Enumerable.Range(1, count).Select(i => new { role = i % 2 == 1 ? "user" : "assistant", content = $"Message number {i} talks about topic {i * 7}." });
        await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = batch })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        var page = await (await client.GetAsync($"/api/conversations/{c.Id}/messages?limit=500")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        return (c.Id, page.Items);
    }
}

internal sealed record ContextDto(Guid ConversationId, int MaxTokens, int TotalTokens, ContextSummaryDto? Summary, List<ContextMessageDto> Messages,
    ContextCoverageDto Coverage, List<ContextMessageDto> SearchHits);

internal sealed record ContextSummaryDto(string Text, long FromSequence, long ToSequence, int Revision, int TokenCount);

internal sealed record ContextMessageDto(long Sequence, string Role, string Content, int TokenCount, DateTimeOffset CreatedAt, string? ExternalId);

internal sealed record ContextCoverageDto(long MessageCount, long? SummaryThrough, long? MessagesFrom, long? MessagesTo, bool Complete);
