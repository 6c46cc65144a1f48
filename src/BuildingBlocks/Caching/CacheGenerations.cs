using System.Collections.Concurrent;
using Microsoft.Extensions.Caching.Hybrid;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace ModularChat.BuildingBlocks.Caching;

/// <summary>
/// Change counters ("generations") of cached scopes such as one conversation, shared by every node through
/// Redis. Readers put the current generation into their cache keys; a writer bumps it right after its change
/// commits, so no node can read an entry built before the change: the next read on any node misses and
/// rebuilds. Each bump is also broadcast on a Redis channel so every node drops its in-process copies of
/// the scope at once (memory hygiene; correctness comes from the generation).
/// Without Redis (not configured, down, or not answering: see <see cref="RedisAvailability"/>) generations are kept per node: still correct on a single node,
/// and with several nodes the in-process entries expire after the short local-only lifetime.
/// Nothing is left in Redis for good: a generation lives <see cref="GenerationLifetime"/> after its last read or
/// bump (longer than any entry built with it), and deleting a resource removes its entries at once (its generation,
/// bumped, expires like any other).
/// A bump that cannot reach Redis (it is down or not answering) is remembered and made in Redis as soon as Redis
/// answers again (checked every <see cref="MissedBumpInterval"/>, and before this node reads that scope's generation):
/// otherwise Redis would come back with the generation of before the change, and every node would serve the entries
/// built before it from Redis until they expired.
/// A generation starts in Redis at a random number, the first time its scope is read or changed there, not at 0: a Redis
/// that restarts empty (no persistence, a failover to an empty server) would otherwise count the scopes' generations
/// again from 0, up to numbers the nodes' in-process entries of before the restart are keyed on, and every node would
/// serve those (the context of before the last appends) until they expired.
/// (HybridCache's own tag invalidation is not used: it writes a Redis key per tag that lives for years.)
/// </summary>
public sealed partial class CacheGenerations : IHostedService
{
    /// <summary>
    /// What every key this service writes to Redis starts with, unless <c>Cache:RedisKeyPrefix</c> says otherwise: the
    /// generations, the tracked keys, HybridCache's entries and the broadcast channel.
    /// </summary>
    public const string DefaultKeyPrefix = "modularchat:";

    // Each script touches one key only, so it also runs on a Redis Cluster. StackExchange.Redis sends a script's
    // hash (EVALSHA) once the server knows it. A publish from a script reaches subscribers like any other.
    private const string BumpScript = """
        if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[4]) end
        redis.call('INCR', KEYS[1])
        redis.call('EXPIRE', KEYS[1], ARGV[1])
        redis.call('PUBLISH', ARGV[2], ARGV[3])
        """;

    // The generation, its lifetime extended; a scope Redis does not know starts at ARGV[2] (a random number).
    private const string ReadScript = """
        local value = redis.call('GET', KEYS[1])
        if value then
          redis.call('EXPIRE', KEYS[1], ARGV[1])
          return value
        end
        redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
        return ARGV[2]
        """;

    // Deletes the generation if it is still ARGV[1] (nothing bumped it since it was read).
    private const string DiscardScript = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
        """;

    private const string TrackScript = """
        redis.call('SADD', KEYS[1], ARGV[1])
        redis.call('EXPIRE', KEYS[1], ARGV[2])
        """;
    private readonly RedisAvailability _redis;
    private readonly HybridCache _cache;
    private readonly ILogger _logger;
    // This node's own generations (used while Redis is not), with when each was last read or bumped.
    private readonly ConcurrentDictionary<string, LocalGeneration> _local = new(StringComparer.Ordinal);

    // Keys this node cached, per scope, with when they expire: what a bump drops from this node's memory.
    private readonly ConcurrentDictionary<string, ConcurrentDictionary<string, long>> _localKeys = new(StringComparer.Ordinal);
    // Scopes whose bump this node could not make in Redis: made there as soon as Redis answers again.
    // With a stamp of the last miss, unique across this node's misses, so a bump that succeeds removes only the misses it
    // was sent after: one missed while it was on its way (its change may have come after the increment) stays, and is made
    // by the next pass. (A count would not do: once another bump cleared it, a new miss counted 1 again and looked like
    // the one a bump still on its way had seen.)
    private readonly ConcurrentDictionary<string, long> _missedBumps = new(StringComparer.Ordinal);
    private long _lastMissStamp;
    // 1 from the miss that was logged until every miss is made (one warning per spell of misses, not one per change).
    private int _missesReported;
    private ITimer? _missedBumpTimer;
    private int _sharingMissedBumps;
    private long _bumpsFailingUntilTicks;
    private readonly TimeProvider _clock;
    private long _nextPruneTicks;
    private readonly string _nodeId = Guid.NewGuid().ToString("N");
    private readonly string _generationPrefix;
    private readonly string _trackedPrefix;
    private readonly Func<long> _firstGeneration;

    /// <summary>
    /// How long a scope's generation stays in Redis after it was last read or bumped. Cached entries must expire sooner
    /// (they are built right after a read): then a generation that expires and starts again (at a new random number)
    /// finds no entry to reuse.
    /// </summary>
    public static readonly TimeSpan GenerationLifetime = TimeSpan.FromDays(1);

    /// <summary>How often this node tries to make in Redis the bumps it could not make while Redis was away.</summary>
    public static readonly TimeSpan MissedBumpInterval = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long a request waits for its bump unless <c>Cache:BumpWait</c> says otherwise. It was 250 ms, short enough for a
    /// pause of a busy node to outlast a bump Redis answered at once; a bump waited out also keeps the node's bumps of the
    /// next second from being tried (<see cref="MissedBumpInterval"/>), and other nodes serve what they cached before those
    /// changes until they are made (the likely cause of a provider added through one node answering 404 on another, seen
    /// once in CI on two busy cores).
    /// </summary>
    public static readonly TimeSpan DefaultBumpWait = TimeSpan.FromSeconds(1);

    /// <summary>How long a request waits for its bump while Redis is slow (then it is made later, as a missed one).</summary>
    public TimeSpan BumpWait { get; }

    /// <summary>How often this node clears its registries of expired keys and unused generations.</summary>
    public static readonly TimeSpan PruneInterval = TimeSpan.FromMinutes(1);

    /// <param name="keyPrefix">
    /// What this deployment's Redis keys and channel start with: deployments that share one Redis stay apart only with
    /// different prefixes (a staging copy of production's database has the same conversation ids).
    /// </param>
    /// <param name="firstGeneration">Where a scope's generation starts in Redis (a random number unless a test says otherwise).</param>
    /// <param name="bumpWait">How long a request waits for its bump (<see cref="DefaultBumpWait"/> unless given).</param>
    public CacheGenerations(
        RedisAvailability redis, HybridCache cache, TimeProvider? clock = null, string keyPrefix = DefaultKeyPrefix, ILogger<CacheGenerations>? logger = null,
        Func<long>? firstGeneration = null, TimeSpan? bumpWait = null)
    {
        BumpWait = bumpWait ?? DefaultBumpWait;
        _firstGeneration = firstGeneration ?? RandomFirstGeneration;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _clock = clock ?? TimeProvider.System;
        _redis = redis;
        _cache = cache;
        _generationPrefix = keyPrefix + "gen:";
        _trackedPrefix = keyPrefix + "gen-keys:";
        Channel = keyPrefix + "cache-invalidations";
    }

    /// <summary>
    /// A random start between 2^40 and 2^52: no number an entry of before a restart of Redis can be keyed on (those counted
    /// from another random start, or, before this start existed, from 0), and exact in any script's arithmetic.
    /// </summary>
    private static long RandomFirstGeneration() => Random.Shared.NextInt64(1L << 40, 1L << 52);

    /// <summary>Redis channel on which bumps are broadcast.</summary>
    public string Channel { get; }

    /// <summary>True when generations are shared through Redis right now.</summary>
    public bool Shared => _redis.Usable;

    private IDatabase Database => _redis.Redis!.GetDatabase();

    /// <summary>
    /// The current generation of <paramref name="scope"/> (in Redis a random start until its first change, with this node
    /// alone 0); null while a change this node made
    /// to the scope is not in Redis yet (its bump missed and cannot be made now) although Redis answers reads: Redis's
    /// generation, and the entries cached in Redis under it, may be of before that change, so the caller reads without
    /// the cache (this node would otherwise not see its own change for up to <see cref="MissedBumpInterval"/>).
    /// </summary>
    public async Task<long?> CurrentAsync(string scope)
    {
        // ContainsKey reads without a lock; IsEmpty, when empty, takes every lock of the dictionary (this is on every read).
        // Made first: else Redis's generation is older than this node's change.
        var behind = _missedBumps.ContainsKey(scope) && !await ShareBumpAsync(scope, change: false).ConfigureAwait(false);
        var shared = await _redis.TryAsync<long?>(async () => (long)await Database.ScriptEvaluateAsync(
                ReadScript, [_generationPrefix + scope], [(long)GenerationLifetime.TotalSeconds, _firstGeneration()]).ConfigureAwait(false),
            null).ConfigureAwait(false);
        if (shared is { } value)
        {
            return behind ? null : value;
        }

        if (!_local.TryGetValue(scope, out var local))
        {
            return 0;
        }

        _local.TryUpdate(scope, local with { TouchedTicks = _clock.GetUtcNow().UtcTicks }, local);
        return local.Value;
    }

    /// <summary>
    /// Takes back the generation a read of <paramref name="scope"/> gave (<paramref name="generation"/>) when the resource
    /// turned out not to exist, unless a change bumped it since: a read of every id, each made up, would otherwise leave a
    /// key per id in the Redis every tenant shares for <see cref="GenerationLifetime"/>. The next read starts the scope at
    /// a new random number, past nothing cached under this one.
    /// </summary>
    public Task DiscardAsync(string scope, long generation)
        => _redis.TryAsync(async () => await Database.ScriptEvaluateAsync(DiscardScript, [_generationPrefix + scope], [generation]).ConfigureAwait(false));

    /// <summary>Marks <paramref name="scope"/> changed: every node's entries built before now stop being read.</summary>
    public async Task BumpAsync(string scope)
    {
        var now = _clock.GetUtcNow().UtcTicks;
        _local.AddOrUpdate(scope, static (_, now) => new(1, now), static (_, g, now) => new(g.Value + 1, now), now);
        PruneWhenDue(now);
        // Dropping this node's entries of the scope is hygiene (the bump is what makes every node stop reading them), and
        // their removal from Redis waits for a command's timeout while Redis does not answer. Before, the request waited
        // for it and then for its bump: ~3-4 s for the first change after Redis stalled. Now both run at once and the
        // request waits for the removal no longer than for its bump (BumpWait); the rest goes on in the background (a
        // failed removal is a no-op: ConnectedOnlyDistributedCache).
        var drop = DropLocalAsync(scope);
        var dropping = drop.WaitAsync(BumpWait, _clock);
        await ShareBumpAsync(scope, change: true).ConfigureAwait(false);
        try
        {
            await dropping.ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Still removing from Redis: the entries are not read again whenever that ends, and nobody waits for it (its
            // failure, such as a multiplexer disposed as the node stops, is observed here rather than left unobserved).
            _ = drop.ContinueWith(static t => _ = t.Exception, CancellationToken.None,
                TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    /// <summary>
    /// Bumps <paramref name="scope"/> in Redis, or remembers it for when Redis answers again. Other nodes read the
    /// generation from Redis, so a bump is tried even while this node leaves Redis alone for its reads after one failed
    /// (a slow read must not let other nodes serve what this change replaced), waiting for it at most
    /// <see cref="BumpWait"/>. After a bump failed, the bumps of requests are only remembered for
    /// <see cref="MissedBumpInterval"/> from that failure (a Redis that does not answer delays one request a second, not
    /// every one); the timer's passes (<paramref name="retrying"/>) try anyway. <paramref name="change"/>: the bump stands
    /// for a new change (a miss is recorded when it is not made), not for a miss recorded before (which stays until made).
    /// </summary>
    private async Task<bool> ShareBumpAsync(string scope, bool change, bool retrying = false)
    {
        if (_redis.Redis is null)
        {
            return true; // no Redis configured: generations are this node's alone
        }

        var missedBefore = _missedBumps.TryGetValue(scope, out var lastMiss);
        // Only a bump that was tried and failed starts the interval again: one skipped within it does not, else a node
        // with a request a second would never try again (and, since reads of a scope with a miss go without the cache,
        // would read those scopes from the database until its traffic stopped).
        var attempt = retrying || _clock.GetUtcNow().UtcTicks >= Interlocked.Read(ref _bumpsFailingUntilTicks);
        // One round trip: increment, extend the lifetime, broadcast (this was three commands).
        var shared = attempt
            && await _redis.TryDespiteBackoffAsync(
                async () => await Database.ScriptEvaluateAsync(BumpScript, [_generationPrefix + scope],
                    [(long)GenerationLifetime.TotalSeconds, Channel, _nodeId + "|" + scope, _firstGeneration()]).ConfigureAwait(false),
                BumpWait).ConfigureAwait(false);
        if (shared)
        {
            if (missedBefore && _missedBumps.TryRemove(KeyValuePair.Create(scope, lastMiss)) && _missedBumps.IsEmpty
                && Interlocked.Exchange(ref _missesReported, 0) == 1)
            {
                LogMissedBumpsMade(_logger);
            }

            return true;
        }

        if (change)
        {
            _missedBumps[scope] = Interlocked.Increment(ref _lastMissStamp);
            if (Interlocked.Exchange(ref _missesReported, 1) == 0)
            {
                LogBumpMissed(_logger, scope, !_redis.Redis.IsConnected ? "Redis is not connected"
                    : attempt ? $"Redis did not answer within {BumpWait.TotalMilliseconds:0} ms"
                    : "no bump is tried within a second of one that failed");
            }
        }

        if (attempt && _redis.Redis.IsConnected)
        {
            Interlocked.Exchange(ref _bumpsFailingUntilTicks, _clock.GetUtcNow().UtcTicks + MissedBumpInterval.Ticks);
        }

        return false;
    }

    /// <summary>Makes in Redis the bumps it missed, once it answers again (one pass at a time).</summary>
    private async Task ShareMissedBumpsAsync()
    {
        if (_missedBumps.IsEmpty || _redis.Redis is not { IsConnected: true } || Interlocked.Exchange(ref _sharingMissedBumps, 1) == 1)
        {
            return;
        }

        try
        {
            foreach (var scope in _missedBumps.Keys)
            {
                if (!await ShareBumpAsync(scope, change: false, retrying: true).ConfigureAwait(false))
                {
                    break; // still away: the next pass goes on
                }
            }
        }
        finally
        {
            Volatile.Write(ref _sharingMissedBumps, 0);
        }
    }

    /// <summary>
    /// Remembers that <paramref name="key"/> caches data of <paramref name="scope"/>, so <see cref="ForgetAsync"/>
    /// can remove it from Redis (L2) as well, not only stop reading it.
    /// </summary>
    public async Task TrackAsync(string scope, string key, TimeSpan lifetime)
    {
        var now = _clock.GetUtcNow().UtcTicks;
        _localKeys.GetOrAdd(scope, _ => new(StringComparer.Ordinal))[key] = now + lifetime.Ticks;
        PruneWhenDue(now);

        if (_redis.Usable)
        {
            // Fire and forget: it returns before Redis answers, so it proves nothing about Redis (no TryAsync).
            try
            {
                await Database.ScriptEvaluateAsync(TrackScript, [_trackedPrefix + scope],
                    [key, (long)Math.Ceiling(lifetime.TotalSeconds)], CommandFlags.FireAndForget).ConfigureAwait(false);
            }
            catch (Exception e) when (RedisAvailability.IsFailure(e))
            {
                _redis.Failed(e);
            }
        }
    }

    /// <summary>
    /// Forgets a scope for good (its resource was deleted): every cached entry of it is removed from every node's
    /// memory and from Redis. Its generation is bumped and kept until it expires (<see cref="GenerationLifetime"/>
    /// after its last read), not deleted: HybridCache writes an entry to Redis after handing the value back, so an entry
    /// built just before the deletion can land after this removal; with the generation restarted at 0 the next read
    /// would find it and serve the deleted resource. Kept, the generation is past every entry built before it.
    /// </summary>
    public async Task ForgetAsync(string scope)
    {
        await BumpAsync(scope).ConfigureAwait(false);
        await _redis.TryAsync(async () =>
        {
            foreach (var key in await Database.SetMembersAsync(_trackedPrefix + scope).ConfigureAwait(false))
            {
                await _cache.RemoveAsync(key.ToString()).ConfigureAwait(false);
            }

            await Database.KeyDeleteAsync(_trackedPrefix + scope).ConfigureAwait(false);
        }).ConfigureAwait(false);
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_redis.Redis is not { } redis)
        {
            return;
        }

        _missedBumpTimer = _clock.CreateTimer(_ => _ = ShareMissedBumpsAsync(), null, MissedBumpInterval, MissedBumpInterval);

        try
        {
            await redis.GetSubscriber().SubscribeAsync(RedisChannel.Literal(Channel), (channel, message) =>
            {
                // "<node>|<scope>": our own bumps already dropped our entries.
                var text = (string?)message ?? "";
                var separator = text.IndexOf('|', StringComparison.Ordinal);
                if (separator > 0 && !text.AsSpan(0, separator).SequenceEqual(_nodeId))
                {
                    _ = DropLocalAsync(text[(separator + 1)..]);
                }
            }).ConfigureAwait(false);
        }
        catch (Exception e) when (RedisAvailability.IsFailure(e))
        {
            // The multiplexer resubscribes when Redis comes back.
            _redis.Failed(e);
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_missedBumpTimer is { } timer)
        {
            await timer.DisposeAsync().ConfigureAwait(false);
        }

        await ShareMissedBumpsAsync().ConfigureAwait(false); // a last try before the node goes
        if (!_missedBumps.IsEmpty)
        {
            // Nobody will make them once this node is gone: when Redis answers again, the other nodes can read entries built
            // before these changes from it until the entries expire.
            LogMissedBumpsLost(_logger, _missedBumps.Count);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "The cache invalidation of {Scope} did not reach Redis ({Reason}): until it does, other nodes may serve what they cached before this change. This node makes it once Redis answers (tried every second) and reads that scope without the cache meanwhile; further misses are not logged until every one is made")]
    private static partial void LogBumpMissed(ILogger logger, string scope, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Every cache invalidation that had not reached Redis is made there now")]
    private static partial void LogMissedBumpsMade(ILogger logger);

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "This node stops with {Count} cache invalidations it could not make in Redis (it did not answer): once Redis answers again, other nodes may serve cached contexts from before those changes until the entries expire (Context:CacheExpiration); flush the deployment's Redis keys to be sure")]
    private static partial void LogMissedBumpsLost(ILogger logger, int count);

    /// <summary>
    /// Drops this node's cached entries of a scope (from Redis too: after a bump nobody reads them again), all at once: one
    /// after the other, each key's removal from a Redis that does not answer held up the next one's for a command's timeout.
    /// </summary>
    private Task DropLocalAsync(string scope)
    {
        if (!_localKeys.TryRemove(scope, out var keys))
        {
            return Task.CompletedTask;
        }

        // HybridCache's Redis layer (ConnectedOnlyDistributedCache) turns Redis failures into no-ops itself.
        return Task.WhenAll(keys.Keys.Select(key => _cache.RemoveAsync(key).AsTask()));
    }

    /// <summary>
    /// At most once per <see cref="PruneInterval"/>: forgets the keys whose entries have expired anyway, and the local
    /// generations unused for <see cref="GenerationLifetime"/> (as Redis forgets its own), so both stay as small as what
    /// this node has cached lately instead of growing with every scope it ever touched.
    /// </summary>
    private void PruneWhenDue(long now)
    {
        var due = Interlocked.Read(ref _nextPruneTicks);
        if (now < due || Interlocked.CompareExchange(ref _nextPruneTicks, now + PruneInterval.Ticks, due) != due)
        {
            return;
        }

        // Inline: once a minute, a pass over what this node touched within a day (a few milliseconds at 100,000 scopes).
        PruneLocalKeys(now);
        var unusedSince = now - GenerationLifetime.Ticks;
        foreach (var (scope, generation) in _local)
        {
            if (generation.TouchedTicks < unusedSince)
            {
                _local.TryRemove(new KeyValuePair<string, LocalGeneration>(scope, generation));
            }
        }
    }

    /// <summary>Forgets keys whose entries have expired anyway, so the registry stays as small as the cache.</summary>
    private void PruneLocalKeys(long now)
    {
        foreach (var (scope, keys) in _localKeys)
        {
            foreach (var (key, expires) in keys)
            {
                if (expires < now)
                {
                    keys.TryRemove(key, out _);
                }
            }

            if (keys.IsEmpty)
            {
                _localKeys.TryRemove(new KeyValuePair<string, ConcurrentDictionary<string, long>>(scope, keys));
            }
        }
    }

    private readonly record struct LocalGeneration(long Value, long TouchedTicks);
}
