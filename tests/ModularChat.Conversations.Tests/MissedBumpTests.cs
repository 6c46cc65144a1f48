using System.Net;
using Microsoft.Extensions.Caching.Distributed;
using Microsoft.Extensions.Caching.Hybrid;
using Microsoft.Extensions.Caching.StackExchangeRedis;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using ModularChat.BuildingBlocks.Caching;
using ModularChat.Host.Infrastructure;
using StackExchange.Redis;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// Which missed bumps (<see cref="CacheGenerations"/>: bumps a node could not make in Redis) a successful bump clears: only
/// those recorded before it was sent. A node's <see cref="CacheGenerations"/> on the real Redis behind a relay that holds
/// its bytes, on a fake clock: Redis answers exactly when the relay lets it, and a bump's wait
/// (<see cref="CacheGenerations.BumpWait"/>) runs out exactly when the test moves the clock past it.
/// </summary>
public sealed class MissedBumpTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _clock = new(DateTimeOffset.UtcNow);
    private readonly string _scope = "test:" + Guid.NewGuid().ToString("N");
    private readonly FakeLogger<CacheGenerations> _logs = new();
    private TcpProxy _proxy = null!;
    private ConfigurationOptions _relayed = null!;
    private ConnectionMultiplexer _node = null!;
    private ConnectionMultiplexer _redis = null!;
    private ServiceProvider _services = null!;
    private CacheGenerations _generations = null!;

    public async Task InitializeAsync()
    {
        var redis = await TestInfrastructure.RedisAsync();
        _proxy = TcpProxy.InFrontOfRedis(redis);
        var relayed = ConfigurationOptions.Parse(redis);
        relayed.EndPoints.Clear();
        relayed.EndPoints.Add(IPAddress.Loopback, _proxy.Port);
        _relayed = relayed;
        _node = await ConnectionMultiplexer.ConnectAsync(relayed);
        _redis = await ConnectionMultiplexer.ConnectAsync(redis); // the test's own view of Redis, not relayed
        _services = new ServiceCollection().AddHybridCache().Services.BuildServiceProvider();
        _generations = new CacheGenerations(
            new RedisAvailability(_node, TimeSpan.FromSeconds(5), NullLogger<RedisAvailability>.Instance, _clock),
            _services.GetRequiredService<HybridCache>(), _clock, logger: _logs, firstGeneration: () => 0); // counted from 0: these tests count increments
    }

    [Fact]
    public async Task A_spell_of_missed_bumps_is_logged_once_naming_a_scope_and_its_end_once_every_one_is_made()
    {
        // Two changes Redis does not answer, then a third while bumps are not tried (within a second of the failure).
        var other = "test:" + Guid.NewGuid().ToString("N");
        await MissWhileRedisDoesNotAnswer(_scope, other);
        await _generations.BumpAsync(_scope);
        var warning = Assert.Single(_logs.Collector.GetSnapshot(), l => l.Level == LogLevel.Warning);
        Assert.Contains(new[] { _scope, other }, scope => warning.Message.Contains($"invalidation of {scope} did not reach Redis", StringComparison.Ordinal));
        Assert.Contains($"Redis did not answer within {_generations.BumpWait.TotalMilliseconds:0} ms", warning.Message, StringComparison.Ordinal);

        // One made (by a read of its scope): the spell goes on. Both made: its end, once.
        _clock.Advance(CacheGenerations.MissedBumpInterval);
        await _generations.CurrentAsync(_scope);
        Assert.DoesNotContain(_logs.Collector.GetSnapshot(), l => l.Level == LogLevel.Information);
        await _generations.CurrentAsync(other);
        var made = Assert.Single(_logs.Collector.GetSnapshot(), l => l.Level == LogLevel.Information);
        Assert.Equal("Every cache invalidation that had not reached Redis is made there now", made.Message);

        // A new spell is logged again.
        await MissWhileRedisDoesNotAnswer(other);
        Assert.Equal(2, _logs.Collector.GetSnapshot().Count(l => l.Level == LogLevel.Warning));
    }

    [Fact]
    public async Task A_bump_missed_while_another_bump_of_its_scope_is_on_its_way_is_kept_when_that_one_succeeds_and_made_by_the_next_pass()
    {
        // The node's pass over its missed bumps runs every MissedBumpInterval of the fake clock.
        await _generations.StartAsync(CancellationToken.None);

        // The second bump succeeds (the first one's increment lands too, before it).
        await MissOneWhileTheNextIsOnItsWay();
        Assert.Equal(2, await GenerationInRedis(_scope));

        // That success may not clear the miss: the change it stands for may have come after the increment. The next pass
        // makes it in Redis.
        _clock.Advance(CacheGenerations.MissedBumpInterval);
        await Eventually.Until(() => GenerationInRedis(_scope), generation => generation >= 3, seconds: 60,
            what: "The bump missed while another was on its way was never made in Redis");
    }

    [Fact]
    public async Task A_bump_sent_after_one_miss_does_not_clear_another_recorded_while_it_was_on_its_way()
    {
        // Not started (no pass of its own): what makes a missed bump here is the read of the scope's generation, which makes
        // a pending one first.
        await MissWhileRedisDoesNotAnswer(_scope);
        _clock.Advance(CacheGenerations.MissedBumpInterval); // requests try Redis again

        // A miss is pending when the second of these bumps is sent.
        await MissOneWhileTheNextIsOnItsWay();
        Assert.Equal(3, await GenerationInRedis(_scope)); // every increment landed, the missed ones late

        // The success cleared the miss it was sent after, not the one recorded meanwhile: the next read makes that one first.
        _clock.Advance(CacheGenerations.MissedBumpInterval);
        Assert.Equal(4, await _generations.CurrentAsync(_scope));
        Assert.Equal(4, await _generations.CurrentAsync(_scope));
        Assert.Equal(4, await GenerationInRedis(_scope));
    }

    [Fact]
    public async Task A_bump_that_succeeds_after_a_miss_clears_it()
    {
        // Not started (no pass of its own): what makes a missed bump here is the read of the scope's generation, which makes
        // a pending one first. The other scope, missed at the same time and not bumped since, shows that it does.
        var other = "test:" + Guid.NewGuid().ToString("N");
        await MissWhileRedisDoesNotAnswer(_scope, other);
        _clock.Advance(CacheGenerations.MissedBumpInterval); // requests try Redis again

        await _generations.BumpAsync(_scope);
        Assert.Equal(2, await GenerationInRedis(_scope)); // the missed increment landed late, then this one

        Assert.Equal(2, await _generations.CurrentAsync(_scope));
        Assert.Equal(2, await _generations.CurrentAsync(other)); // its missed increment, late, and the one the read made
        Assert.Equal(2, await GenerationInRedis(_scope));
        Assert.Equal(2, await GenerationInRedis(other));
    }

    [Fact]
    public async Task While_a_missed_bump_cannot_be_made_a_read_of_its_scope_gets_no_generation_to_cache_under()
    {
        // Redis answers again, and requests leave it alone for a while: the miss waits for the timer or the interval's end.
        await MissWhileRedisDoesNotAnswer(_scope);
        var untouched = "test:" + Guid.NewGuid().ToString("N");

        // Redis's generation (and what is cached under it in Redis) may be of before this node's change: not to be used. Before,
        // the read returned it, and the node could serve its own request what it had cached before the change.
        Assert.Null(await _generations.CurrentAsync(_scope));
        Assert.Equal(0, await _generations.CurrentAsync(untouched)); // other scopes are read as usual

        // Once the miss can be made, the read makes it first and has a generation again.
        _clock.Advance(CacheGenerations.MissedBumpInterval);
        Assert.Equal(2, await _generations.CurrentAsync(_scope));
    }

    [Fact]
    public async Task Requests_try_Redis_again_one_interval_after_the_last_bump_that_failed_however_often_they_read_meanwhile()
    {
        await MissWhileRedisDoesNotAnswer(_scope);

        // Reads within the interval do not try (nor start it again): the scope is read without the cache meanwhile.
        for (var i = 0; i < 4; i++)
        {
            _clock.Advance(CacheGenerations.MissedBumpInterval / 5);
            Assert.Null(await _generations.CurrentAsync(_scope));
        }

        // One interval after the failure, a read tries, makes the miss, and has a generation again. Before, each read in the
        // interval started it again: a node read every second or more often would never have tried.
        _clock.Advance(CacheGenerations.MissedBumpInterval / 5);
        Assert.Equal(2, await _generations.CurrentAsync(_scope));
    }

    [Fact]
    public async Task A_bump_while_Redis_does_not_answer_waits_for_the_removal_of_its_entries_from_Redis_no_longer_than_for_itself()
    {
        // A node whose HybridCache keeps entries in Redis too, behind the relay, as the service's does (through
        // ConnectedOnlyDistributedCache); its Redis commands time out after a minute.
        var options = _relayed.Clone();
        options.AsyncTimeout = options.SyncTimeout = 60_000;
        await using var slow = await ConnectionMultiplexer.ConnectAsync(options);
        var availability = new RedisAvailability(slow, TimeSpan.FromSeconds(5), NullLogger<RedisAvailability>.Instance, _clock);
        var prefix = $"test-l2:{Guid.NewGuid():N}:";
        var l2 = new RedisCache(Options.Create(new RedisCacheOptions
        {
            ConnectionMultiplexerFactory = () => Task.FromResult<IConnectionMultiplexer>(slow),
            InstanceName = prefix,
        }));
        await using var services = new ServiceCollection()
            .AddSingleton<IDistributedCache>(new ConnectedOnlyDistributedCache(l2, availability))
            .AddHybridCache().Services.BuildServiceProvider();
        var cache = services.GetRequiredService<HybridCache>();
        var generations = new CacheGenerations(availability, cache, _clock, firstGeneration: () => 0);
        var keys = Enumerable.Range(0, 3).Select(i => $"entry-{i}").ToList();
        foreach (var key in keys)
        {
            await cache.SetAsync(key, "cached");
            await generations.TrackAsync(_scope, key, TimeSpan.FromMinutes(5));
        }

        Assert.All(keys, key => Assert.True(_redis.GetDatabase().KeyExists(prefix + key), $"{key} is not in Redis"));

        _proxy.Stall();
        var bump = generations.BumpAsync(_scope);
        _clock.Advance(generations.BumpWait);

        // The bump's wait is over (it is made later, as a missed one): the request goes on while the entries' removal from
        // Redis still waits. Before, the request waited for each entry's removal in turn (each a command's timeout), then
        // for its bump.
        await bump.WaitAsync(TimeSpan.FromSeconds(20));

        // The removals were not given up: once Redis answers, the entries are gone from it.
        _proxy.Restore();
        await Eventually.Until(() => Task.FromResult(keys.Count(key => _redis.GetDatabase().KeyExists(prefix + key))), n => n == 0, seconds: 90,
            what: "The entries were not removed from Redis once it answered");
        await generations.StopAsync(CancellationToken.None);
    }

    /// <summary>
    /// Two changes of the scope: their bumps are sent one after the other while Redis does not answer. The first one's wait
    /// runs out while the second is on its way: its miss is recorded after the second was sent. Redis then answers within
    /// the second bump's wait, which succeeds.
    /// </summary>
    private async Task MissOneWhileTheNextIsOnItsWay()
    {
        _proxy.Stall();
        var missed = _generations.BumpAsync(_scope);
        _clock.Advance(_generations.BumpWait / 2);
        var onItsWay = _generations.BumpAsync(_scope);
        _clock.Advance(_generations.BumpWait / 2);
        await missed;
        Assert.False(onItsWay.IsCompleted);
        _proxy.Restore();
        await onItsWay;
    }

    /// <summary>
    /// Bumps <paramref name="scopes"/> while Redis does not answer, until their wait runs out: missed bumps. Redis then
    /// answers again (the increments land late) and requests leave it alone for <see cref="CacheGenerations.MissedBumpInterval"/>.
    /// </summary>
    private async Task MissWhileRedisDoesNotAnswer(params string[] scopes)
    {
        _proxy.Stall();
        var bumps = scopes.Select(_generations.BumpAsync).ToList();
        _clock.Advance(_generations.BumpWait);
        await Task.WhenAll(bumps);
        _proxy.Restore();
    }

    /// <summary>The scope's generation in Redis (0 when there is none), read past the relay.</summary>
    private async Task<long> GenerationInRedis(string scope)
    {
        var value = await _redis.GetDatabase().StringGetAsync(CacheGenerations.DefaultKeyPrefix + "gen:" + scope);
        return value.HasValue ? (long)value : 0;
    }

    public async Task DisposeAsync()
    {
        _proxy.Restore();
        await _generations.StopAsync(CancellationToken.None);
        await _node.DisposeAsync();
        await _redis.DisposeAsync();
        await _services.DisposeAsync();
        await _proxy.DisposeAsync();
    }
}
