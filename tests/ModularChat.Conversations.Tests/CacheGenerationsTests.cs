using Microsoft.Extensions.Caching.Hybrid;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using System.Net;
using ModularChat.BuildingBlocks.Caching;
using StackExchange.Redis;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// The cache generations between two nodes of one deployment, on the real Redis: a change on one node reaches the
/// other's generation at once, and the other node's in-process copies of that scope (only) are dropped through the
/// broadcast.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class CacheGenerationsTests(ConversationsApp app)
{
    [Fact]
    public async Task A_change_on_one_node_moves_the_generation_everywhere_and_drops_the_other_nodes_copies_of_that_scope_only()
    {
        await using var second = await app.StartHostAsync();
        var one = app.Host.Services.GetRequiredService<CacheGenerations>();
        var two = second.Services.GetRequiredService<CacheGenerations>();
        var cacheOnTwo = second.Services.GetRequiredService<HybridCache>();
        var changed = "test:" + Guid.NewGuid().ToString("N");
        var untouched = "test:" + Guid.NewGuid().ToString("N");

        // Node two caches an entry of each scope (in memory and in Redis) and tracks them.
        Assert.Equal("before", await cacheOnTwo.GetOrCreateAsync(changed + ":entry", _ => ValueTask.FromResult("before")));
        Assert.Equal("kept", await cacheOnTwo.GetOrCreateAsync(untouched + ":entry", _ => ValueTask.FromResult("kept")));
        await two.TrackAsync(changed, changed + ":entry", TimeSpan.FromMinutes(5));
        await two.TrackAsync(untouched, untouched + ":entry", TimeSpan.FromMinutes(5));
        var first = await two.CurrentAsync(changed);
        Assert.NotNull(first);

        // HybridCache writes an entry to Redis after it has handed the value back: a drop that reached Redis before
        // that write would leave the old copy there for node two to read again. (The product's keys carry the
        // generation, so such a late copy is never read; these test keys do not.)
        var redis = app.Host.Services.GetRequiredService<IConnectionMultiplexer>().GetDatabase();
        await Eventually.Until(() => redis.KeyExistsAsync("modularchat:" + changed + ":entry"), stored => stored,
            seconds: 60, what: "Node two's entry never reached Redis");

        await one.BumpAsync(changed);

        // The generation is shared: node two reads the new one without any message having to arrive.
        Assert.Equal(first + 1, await two.CurrentAsync(changed));
        Assert.Equal(first + 1, await one.CurrentAsync(changed));

        // The broadcast drops node two's copy: its factory runs again. The other scope's entry is still served.
        await Eventually.Until(
            async () => await cacheOnTwo.GetOrCreateAsync(changed + ":entry", _ => ValueTask.FromResult("after")),
            value => value == "after", seconds: 60, what: "Node two still serves the entry of the changed scope");
        Assert.Equal("kept", await cacheOnTwo.GetOrCreateAsync(untouched + ":entry", _ => ValueTask.FromResult("rebuilt")));
    }

    [Fact]
    public async Task A_node_that_started_while_Redis_was_away_gets_the_broadcasts_once_it_is_back()
    {
        await using var proxy = TcpProxy.InFrontOfRedis(app.RedisConnectionString);
        proxy.Cut();
        await using var second = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Redis"] = $"127.0.0.1:{proxy.Port}",
            ["Cache:RedisRetryInterval"] = "00:00:01",
        });
        var two = second.Services.GetRequiredService<CacheGenerations>();
        Assert.False(two.Shared); // it could not subscribe when it started

        proxy.Restore();
        await Eventually.Until(() => Task.FromResult(two.Shared), shared => shared, seconds: 60, what: "Node two never reconnected to Redis");

        var cacheOnTwo = second.Services.GetRequiredService<HybridCache>();
        var changed = "test:" + Guid.NewGuid().ToString("N");
        Assert.Equal("before", await cacheOnTwo.GetOrCreateAsync(changed + ":entry", _ => ValueTask.FromResult("before")));
        await two.TrackAsync(changed, changed + ":entry", TimeSpan.FromMinutes(5));
        var redis = app.Host.Services.GetRequiredService<IConnectionMultiplexer>().GetDatabase();
        await Eventually.Until(() => redis.KeyExistsAsync("modularchat:" + changed + ":entry"), stored => stored,
            seconds: 60, what: "Node two's entry never reached Redis");

        // The multiplexer reports itself connected once its command connection is back; the subscription has a
        // connection of its own and is renewed after that one reconnects. A bump published in between reaches no one
        // on node two (the generation, shared, still keeps it from reading old entries), so bump until one arrives.
        var one = app.Host.Services.GetRequiredService<CacheGenerations>();
        await Eventually.Until(
            async () =>
            {
                await one.BumpAsync(changed);
                await Task.Delay(200);
                return await cacheOnTwo.GetOrCreateAsync(changed + ":entry", _ => ValueTask.FromResult("after"));
            },
            value => value == "after", seconds: 60, what: "Node two never got a broadcast: it still serves the entry of the changed scope");
    }

    [Fact]
    public async Task Deployments_with_different_key_prefixes_share_one_Redis_without_touching_each_other()
    {
        // A staging deployment whose database is a copy of production's has the same conversation ids: only the prefix
        // keeps its cache apart.
        await using var staging = await app.StartHostAsync(new Dictionary<string, string?> { ["Cache:RedisKeyPrefix"] = "staging:" });
        var production = app.Host.Services.GetRequiredService<CacheGenerations>();
        var copy = staging.Services.GetRequiredService<CacheGenerations>();
        var redis = app.Host.Services.GetRequiredService<IConnectionMultiplexer>().GetDatabase();
        var scope = "test:" + Guid.NewGuid().ToString("N");

        // What each publishes about this scope (other tests' background work publishes too), on a connection of the
        // test's own: Redis delivers one connection's messages in order.
        var published = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await using var listener = await ConnectionMultiplexer.ConnectAsync(app.RedisConnectionString);
        foreach (var channel in new[] { production.Channel, copy.Channel })
        {
            await listener.GetSubscriber().SubscribeAsync(RedisChannel.Literal(channel), (from, message) =>
            {
                if (message.ToString().EndsWith("|" + scope, StringComparison.Ordinal))
                {
                    published.Enqueue($"{from}={scope}");
                }
            });
        }

        Assert.Equal("staging:cache-invalidations", copy.Channel);
        Assert.Equal("modularchat:cache-invalidations", production.Channel);

        // The copy caches an entry of the scope: it lands under its own prefix only.
        var cacheOnCopy = staging.Services.GetRequiredService<HybridCache>();
        Assert.Equal("staging data", await cacheOnCopy.GetOrCreateAsync(scope + ":entry", _ => ValueTask.FromResult("staging data")));
        await Eventually.Until(() => redis.KeyExistsAsync("staging:" + scope + ":entry"), stored => stored,
            seconds: 60, what: "The staging entry never reached Redis");
        Assert.False(await redis.KeyExistsAsync("modularchat:" + scope + ":entry"));

        // A change in production moves production's generation and is broadcast on production's channel only.
        Assert.False(await redis.KeyExistsAsync("staging:gen:" + scope));
        await production.BumpAsync(scope);
        Assert.True(await redis.KeyExistsAsync("modularchat:gen:" + scope));
        Assert.False(await redis.KeyExistsAsync("staging:gen:" + scope));
        var productionAfter = await production.CurrentAsync(scope);
        var copyFirst = await copy.CurrentAsync(scope);
        Assert.NotEqual(productionAfter, copyFirst);
        await Eventually.Until(() => Task.FromResult(published.Count), count => count == 1, seconds: 60, what: "Production's bump was not broadcast");

        await copy.BumpAsync(scope);
        await copy.BumpAsync(scope);
        Assert.Equal(copyFirst + 2, await copy.CurrentAsync(scope));
        Assert.Equal(productionAfter, await production.CurrentAsync(scope));
        var all = await Eventually.Until(() => Task.FromResult(published.ToArray()), seen => seen.Length >= 3, seconds: 60, what: "Staging's bumps were not broadcast");
        Assert.Equal([$"modularchat:cache-invalidations={scope}", $"staging:cache-invalidations={scope}", $"staging:cache-invalidations={scope}"], all);
    }

    [Fact]
    public async Task Nothing_is_left_in_Redis_for_good()
    {
        var generations = app.Host.Services.GetRequiredService<CacheGenerations>();
        var redis = app.Host.Services.GetRequiredService<IConnectionMultiplexer>().GetDatabase();
        var scope = "test:" + Guid.NewGuid().ToString("N");

        var first = await generations.CurrentAsync(scope);
        await generations.TrackAsync(scope, scope + ":entry", TimeSpan.FromMinutes(5));
        await generations.BumpAsync(scope);

        // The bump and the tracked keys expire (the tracking is fire-and-forget: wait until it has landed).
        var generationTtl = await redis.KeyTimeToLiveAsync("modularchat:gen:" + scope);
        Assert.InRange(generationTtl!.Value, CacheGenerations.GenerationLifetime - TimeSpan.FromMinutes(1), CacheGenerations.GenerationLifetime);
        var trackedTtl = await Eventually.Until(() => redis.KeyTimeToLiveAsync("modularchat:gen-keys:" + scope), ttl => ttl is not null,
            seconds: 60, what: "The tracked keys were not stored with a lifetime");
        Assert.InRange(trackedTtl!.Value, TimeSpan.FromMinutes(4), TimeSpan.FromMinutes(5));
        Assert.Equal([scope + ":entry"], (await redis.SetMembersAsync("modularchat:gen-keys:" + scope)).Select(m => m.ToString()));

        // Forgetting the scope removes the entries and their list; the generation, bumped, stays until it expires.
        await generations.ForgetAsync(scope);
        Assert.False(await redis.KeyExistsAsync("modularchat:" + scope + ":entry"));
        Assert.False(await redis.KeyExistsAsync("modularchat:gen-keys:" + scope));
        Assert.Equal(first + 2, await generations.CurrentAsync(scope));
        Assert.InRange((await redis.KeyTimeToLiveAsync("modularchat:gen:" + scope))!.Value,
            CacheGenerations.GenerationLifetime - TimeSpan.FromMinutes(1), CacheGenerations.GenerationLifetime);
    }

    [Fact]
    public async Task A_redis_that_restarts_empty_does_not_bring_back_the_generations_of_entries_cached_before()
    {
        // Node one builds the context (into its memory and Redis), node two reads it from Redis into its own memory.
        await using var second = await app.StartHostAsync();
        var user = ModularChatApp.NewUser();
        using var one = app.Client(user);
        using var two = app.Client(second, user);
        var conversation = await one.NewConversation("restart");
        await (await one.PostJson($"/api/conversations/{conversation.Id}/messages", new { role = "user", content = "message 1" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        foreach (var node in new[] { one, two })
        {
            Assert.Equal(["message 1"], await ContextAsync(node, conversation.Id));
        }

        // Redis restarts empty (without persistence, or a failover to an empty server): the scope's generation is gone.
        var redis = app.Host.Services.GetRequiredService<IConnectionMultiplexer>().GetDatabase();
        Assert.True(await redis.KeyDeleteAsync($"modularchat:gen:conv:{user}:{conversation.Id:N}"));

        // Counted again from 0, the next changes' generations were those the nodes' entries of before are keyed on (in memory
        // on both nodes and in Redis): every read served the context of message 1 until the entries expired.
        for (var n = 2; n <= 4; n++)
        {
            await (await two.PostJson($"/api/conversations/{conversation.Id}/messages", new { role = "user", content = $"message {n}" }))
                .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
            foreach (var node in new[] { two, one })
            {
                Assert.Equal($"message {n}", (await ContextAsync(node, conversation.Id))[^1]);
            }
        }
    }

    private static async Task<List<string>> ContextAsync(HttpClient client, Guid conversationId)
        => (await (await client.GetAsync($"/api/conversations/{conversationId}/context?maxTokens=1000")).ReadAs<ContextDto>(HttpStatusCode.OK))
            .Messages.Select(m => m.Content).ToList();

    [Fact]
    public async Task An_entry_that_lands_after_its_resource_was_deleted_is_never_read()
    {
        var generations = app.Host.Services.GetRequiredService<CacheGenerations>();
        var cache = app.Host.Services.GetRequiredService<HybridCache>();
        var scope = "test:" + Guid.NewGuid().ToString("N");

        // An entry is built at the scope's generation; the resource is deleted before the entry's write reaches Redis
        // (HybridCache writes it after handing the value back), so the deletion does not remove it.
        var built = await generations.CurrentAsync(scope);
        await generations.TrackAsync(scope, $"{scope}:g{built}", TimeSpan.FromMinutes(5));
        await generations.ForgetAsync(scope);
        await cache.SetAsync($"{scope}:g{built}", "deleted resource's data");

        // A read after the deletion does not use that generation, so it does not find the late entry.
        var current = await generations.CurrentAsync(scope);
        Assert.NotEqual(built, current);
        Assert.Equal("rebuilt", await cache.GetOrCreateAsync($"{scope}:g{current}", _ => ValueTask.FromResult("rebuilt")));
    }
}

/// <summary>A node's own generations (what it uses while Redis is not) are forgotten once unused, as Redis forgets its.</summary>
public sealed class LocalCacheGenerationsTests
{
    [Fact]
    public async Task A_generation_unused_for_its_lifetime_is_forgotten_and_one_in_use_is_kept()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var services = new ServiceCollection().AddHybridCache().Services.BuildServiceProvider();
        var generations = new CacheGenerations(
            new RedisAvailability(null, TimeSpan.FromSeconds(5), NullLogger<RedisAvailability>.Instance, clock),
            services.GetRequiredService<HybridCache>(), clock);
        Assert.False(generations.Shared);

        await generations.BumpAsync("unused");
        await generations.BumpAsync("unused");
        await generations.BumpAsync("read");
        await generations.BumpAsync("bumped");
        Assert.Equal(2, await generations.CurrentAsync("unused"));

        // Half a lifetime later one scope is read and one bumped again; the third is left alone.
        clock.Advance(CacheGenerations.GenerationLifetime / 2);
        Assert.Equal(1, await generations.CurrentAsync("read"));
        await generations.BumpAsync("bumped");

        // A lifetime after its last use, the next bump clears the unused generation away: it starts again at 0. The
        // others are kept.
        clock.Advance(CacheGenerations.GenerationLifetime / 2 + TimeSpan.FromMinutes(1));
        await generations.BumpAsync("other");
        Assert.Equal(0, await generations.CurrentAsync("unused"));
        Assert.Equal(1, await generations.CurrentAsync("read"));
        Assert.Equal(2, await generations.CurrentAsync("bumped"));
    }
}
