using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Caching;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// A node whose Redis stops answering while its connections stay open (a relay in front of the real Redis holds every
/// byte): Redis is only a cache, so every request still succeeds with what it stored or read, and the node goes back to
/// Redis once it answers again.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class RedisOutageTests(ConversationsApp app)
{
    [Fact]
    public async Task While_Redis_does_not_answer_reads_writes_and_deletes_still_succeed()
    {
        await using var proxy = TcpProxy.InFrontOfRedis(app.RedisConnectionString);
        await using var node = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Redis"] = $"127.0.0.1:{proxy.Port}",
            // Long enough for the reads and the deletion below to run while the node leaves Redis alone (at 1 s it could
            // use Redis again before they did).
            ["Cache:RedisRetryInterval"] = "00:00:05",
        });
        var redis = node.Services.GetRequiredService<RedisAvailability>();
        var user = ModularChatApp.NewUser("stalled-redis");
        using var client = app.Client(node, user);
        var kept = await client.NewConversation("kept");
        var gone = await client.NewConversation("gone");
        foreach (var conversation in new[] { kept, gone })
        {
            await (await client.PostJson($"/api/conversations/{conversation.Id}/messages", new { role = "user", content = "before" }))
                .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
            await (await client.GetAsync($"/api/conversations/{conversation.Id}/context?maxTokens=1000")).ReadAs<ContextDto>(HttpStatusCode.OK);
        }

        Assert.True(redis.Usable);
        var generationBefore = await GenerationInRedis(user, kept.Id);

        proxy.Stall();

        await (await client.PostJson($"/api/conversations/{kept.Id}/messages", new { role = "assistant", content = "during" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        // A Redis command of the append (the removal of its cached context from Redis) times out: the node leaves Redis
        // alone for a while. The append answered before that (it waits for the removal no longer than for its bump,
        // Cache:BumpWait), so not necessarily yet.
        await Eventually.Until(() => Task.FromResult(redis.Usable), usable => !usable, seconds: 30,
            what: $"Redis still counted as usable after a stalled append (connected: {redis.Redis?.IsConnected})");
        var context = await (await client.GetAsync($"/api/conversations/{kept.Id}/context?maxTokens=1000")).ReadAs<ContextDto>(HttpStatusCode.OK);
        Assert.Equal(["before", "during"], context.Messages.Select(m => m.Content));
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{gone.Id}")).StatusCode);
        await (await client.GetAsync($"/api/conversations/{gone.Id}")).ShouldBeProblem(404);

        proxy.Restore();
        await Eventually.Until(() => Task.FromResult(redis.Usable), usable => usable, seconds: 60, what: "Redis is not tried again");
        // The bump the stalled append could not make is made in Redis once it answers (one past the generation of "before"):
        // only then is what the node caches next under the generation every node reads.
        await Eventually.Until(() => GenerationInRedis(user, kept.Id), g => g > generationBefore, seconds: 60, what: "The missed bump was not made in Redis");
        var cachedBefore = await ContextKeysInRedis(user, kept.Id);

        await (await client.PostJson($"/api/conversations/{kept.Id}/messages", new { role = "user", content = "after" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        Assert.True(redis.Usable, $"Redis not usable after it answered again (connected: {redis.Redis?.IsConnected})");

        // These go through Redis again: once the node has made its missed bumps there (until then it reads without the
        // cache: what Redis holds may be of before its changes), it caches the new context there, under the generation its
        // append bumped there, so another node (the fixture's, on Redis directly, with nothing of this conversation in
        // memory) reads it from Redis as a hit.
        await Eventually.Until(
            async () =>
            {
                context = await (await client.GetAsync($"/api/conversations/{kept.Id}/context?maxTokens=1000")).ReadAs<ContextDto>(HttpStatusCode.OK);
                Assert.Equal(["before", "during", "after"], context.Messages.Select(m => m.Content));
                return (await ContextKeysInRedis(user, kept.Id)).Except(cachedBefore).ToList();
            },
            added => added.Count > 0, seconds: 60, what: "The context read after Redis came back never reached Redis");
        using var lookups = new CacheLookupRecorder(app.Host);
        using var other = app.Client(user);
        var fromRedis = await (await other.GetAsync($"/api/conversations/{kept.Id}/context?maxTokens=1000")).ReadAs<ContextDto>(HttpStatusCode.OK);
        Assert.Equal(["before", "during", "after"], fromRedis.Messages.Select(m => m.Content));
        Assert.Equal(["hit"], lookups.Results("context"));
    }

    /// <summary>The conversation's context generation in Redis (0 when there is none).</summary>
    private async Task<long> GenerationInRedis(string tenant, Guid conversationId)
    {
        var value = await app.Host.Services.GetRequiredService<StackExchange.Redis.IConnectionMultiplexer>().GetDatabase()
            .StringGetAsync($"modularchat:gen:conv:{tenant}:{conversationId:N}");
        return value.HasValue ? (long)value : 0;
    }

    /// <summary>The Redis keys of the conversation's cached contexts (any generation and budget).</summary>
    private async Task<List<string>> ContextKeysInRedis(string tenant, Guid conversationId)
    {
        var redis = app.Host.Services.GetRequiredService<StackExchange.Redis.IConnectionMultiplexer>();
        var keys = new List<string>();
        foreach (var endpoint in redis.GetEndPoints())
        {
            await foreach (var key in redis.GetServer(endpoint).KeysAsync(pattern: $"modularchat:ctx:conv:{tenant}:{conversationId:N}:*"))
            {
                keys.Add(key.ToString());
            }
        }

        return keys;
    }

    [Fact]
    public async Task A_Redis_that_goes_away_is_logged_once_requests_still_succeed_and_its_return_is_logged()
    {
        await using var proxy = TcpProxy.InFrontOfRedis(app.RedisConnectionString);
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["ConnectionStrings:Redis"] = $"127.0.0.1:{proxy.Port}" });
        var redis = node.Services.GetRequiredService<RedisAvailability>();
        using var client = app.Client(node, ModularChatApp.NewUser("redis-gone"));
        var conversation = await client.NewConversation("while Redis is gone");
        int Said(string text) => app.Logs.Entries.Count(e => e.Category == typeof(RedisAvailability).FullName && e.Message.StartsWith(text, StringComparison.Ordinal));
        var (failing, back) = (Said("Redis is failing"), Said("Redis answers again"));

        proxy.Cut(); // the server went away: connections reset, new ones refused

        // Nothing was logged: no command runs on a connection that is known to be down, so none failed.
        await Eventually.Until(() => Task.FromResult(Said("Redis is failing")), n => n == failing + 1, seconds: 60, what: "no warning that Redis failed");
        Assert.False(redis.Usable);
        for (var i = 0; i < 3; i++)
        {
            await (await client.PostJson($"/api/conversations/{conversation.Id}/messages", new { role = "user", content = $"during {i}" }))
                .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
            await (await client.GetAsync($"/api/conversations/{conversation.Id}/context?maxTokens=1000")).ReadAs<ContextDto>(HttpStatusCode.OK);
        }

        Assert.Equal(failing + 1, Said("Redis is failing")); // once, not per request
        proxy.Restore();
        await Eventually.Until(() => Task.FromResult(Said("Redis answers again")), n => n == back + 1, seconds: 20, what: "no line that Redis is back");
        await Eventually.Until(() => Task.FromResult(redis.Usable), usable => usable, seconds: 10, what: "Redis is not used again");
    }

    [Fact]
    public async Task A_node_that_stops_before_Redis_answers_again_warns_about_the_invalidations_it_could_not_make()
    {
        await using var proxy = TcpProxy.InFrontOfRedis(app.RedisConnectionString);
        var node = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Redis"] = $"127.0.0.1:{proxy.Port}",
            ["Cache:RedisRetryInterval"] = "00:00:01",
        });
        var mark = $"stopping-{Guid.NewGuid():N}";
        try
        {
            using var client = app.Client(node, ModularChatApp.NewUser("stopping-without-redis"));
            var conversation = await client.NewConversation("changed while Redis is away");
            proxy.Stall();
            await (await client.PostJson($"/api/conversations/{conversation.Id}/messages", new { role = "user", content = "during" }))
                .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
            // The append waited CacheGenerations.BumpWait for its bump, not Redis's timeout, after which the node leaves Redis alone.
            var redis = node.Services.GetRequiredService<RedisAvailability>();
            await Eventually.Until(() => Task.FromResult(redis.Usable), usable => !usable, seconds: 10, what: "Redis still counted as usable");
        }
        finally
        {
            using (CapturedLogs.Mark(mark))
            {
                await node.DisposeAsync();
            }
        }

        var warning = Assert.Single(app.Logs.Entries, e => e.Mark == mark && e.Category == typeof(CacheGenerations).FullName && e.Level == LogLevel.Warning);
        Assert.Contains("with 1 cache invalidations", warning.Message, StringComparison.Ordinal);
    }
}
