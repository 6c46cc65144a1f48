using System.Collections.Concurrent;
using Microsoft.Extensions.Caching.Hybrid;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace ModularChat.BuildingBlocks.Caching;

/// <summary>
/// Change counters ("generations") of cached scopes such as one conversation, shared by every node through
/// Redis. Readers put the current generation into their cache keys; a writer bumps it right after its change
/// commits, so no node can read an entry built before the change: the next read on any node misses and
/// rebuilds. Each bump is also broadcast on a Redis channel so every node drops its in-process copies of
/// the scope at once (memory hygiene; correctness comes from the generation).
/// Without Redis (not configured, or down) generations are kept per node: still correct on a single node,
/// and with several nodes the in-process entries expire after the short local-only lifetime.
/// </summary>
public sealed partial class CacheGenerations : IHostedService
{
    /// <summary>Redis channel on which bumps are broadcast.</summary>
    public const string Channel = "modularchat:cache-invalidations";

    private const string KeyPrefix = "modularchat:gen:";
    private const string TrackedPrefix = "modularchat:gen-keys:";
    private readonly IConnectionMultiplexer? _redis;
    private readonly HybridCache _cache;
    private readonly ILogger<CacheGenerations> _logger;
    private readonly ConcurrentDictionary<string, long> _local = new(StringComparer.Ordinal);
    private readonly string _nodeId = Guid.NewGuid().ToString("N");
    private int _redisFailing;

    public CacheGenerations(IServiceProvider services, HybridCache cache, ILogger<CacheGenerations> logger)
    {
        _redis = services.GetService<IConnectionMultiplexer>();
        _cache = cache;
        _logger = logger;
    }

    /// <summary>True when generations are shared through Redis right now.</summary>
    public bool Shared => _redis is { IsConnected: true } && Volatile.Read(ref _redisFailing) == 0;

    /// <summary>The current generation of <paramref name="scope"/> (0 until its first change).</summary>
    public async Task<long> CurrentAsync(string scope)
    {
        if (_redis is { IsConnected: true })
        {
            try
            {
                var value = await _redis.GetDatabase().StringGetAsync(KeyPrefix + scope).ConfigureAwait(false);
                Recovered();
                return value.HasValue ? (long)value : 0;
            }
            catch (RedisException e)
            {
                Failed(e);
            }
        }

        return _local.GetValueOrDefault(scope);
    }

    /// <summary>Marks <paramref name="scope"/> changed: every node's entries built before now stop being read.</summary>
    public async Task BumpAsync(string scope)
    {
        _local.AddOrUpdate(scope, 1, (_, g) => g + 1);
        await DropLocalAsync(scope).ConfigureAwait(false);
        if (_redis is { IsConnected: true })
        {
            try
            {
                var database = _redis.GetDatabase();
                await database.StringIncrementAsync(KeyPrefix + scope).ConfigureAwait(false);
                await _redis.GetSubscriber()
                    .PublishAsync(RedisChannel.Literal(Channel), _nodeId + "|" + scope, CommandFlags.FireAndForget)
                    .ConfigureAwait(false);
                Recovered();
            }
            catch (RedisException e)
            {
                Failed(e);
            }
        }
    }

    /// <summary>
    /// Remembers that <paramref name="key"/> caches data of <paramref name="scope"/>, so <see cref="ForgetAsync"/>
    /// can remove it from Redis (L2) as well, not only stop reading it.
    /// </summary>
    public async Task TrackAsync(string scope, string key, TimeSpan lifetime)
    {
        if (_redis is { IsConnected: true })
        {
            try
            {
                var database = _redis.GetDatabase();
                await database.SetAddAsync(TrackedPrefix + scope, key, CommandFlags.FireAndForget).ConfigureAwait(false);
                await database.KeyExpireAsync(TrackedPrefix + scope, lifetime, CommandFlags.FireAndForget).ConfigureAwait(false);
            }
            catch (RedisException e)
            {
                Failed(e);
            }
        }
    }

    /// <summary>
    /// Forgets a scope for good (its resource was deleted): every cached entry of it is removed from every node's
    /// memory and from Redis, and so is its generation.
    /// </summary>
    public async Task ForgetAsync(string scope)
    {
        await BumpAsync(scope).ConfigureAwait(false);
        _local.TryRemove(scope, out _);
        if (_redis is { IsConnected: true })
        {
            try
            {
                var database = _redis.GetDatabase();
                foreach (var key in await database.SetMembersAsync(TrackedPrefix + scope).ConfigureAwait(false))
                {
                    await _cache.RemoveAsync(key.ToString()).ConfigureAwait(false);
                }

                await database.KeyDeleteAsync([TrackedPrefix + scope, KeyPrefix + scope]).ConfigureAwait(false);
            }
            catch (RedisException e)
            {
                Failed(e);
            }
        }
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_redis is null)
        {
            return;
        }

        try
        {
            await _redis.GetSubscriber().SubscribeAsync(RedisChannel.Literal(Channel), (channel, message) =>
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
        catch (RedisException e)
        {
            // The multiplexer resubscribes when Redis comes back.
            Failed(e);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Drops this node's cached entries of a scope. HybridCache also records the tag in Redis, which may be down.</summary>
    private async Task DropLocalAsync(string scope)
    {
        try
        {
            await _cache.RemoveByTagAsync(scope).ConfigureAwait(false);
        }
        catch (RedisException e)
        {
            Failed(e);
        }
    }

    private void Failed(RedisException e)
    {
        if (Interlocked.Exchange(ref _redisFailing, 1) == 0)
        {
            LogRedisFailing(_logger, e);
        }
    }

    private void Recovered()
    {
        if (Interlocked.Exchange(ref _redisFailing, 0) == 1)
        {
            LogRedisBack(_logger);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Redis is failing: cache generations fall back to this node only until it answers again")]
    private static partial void LogRedisFailing(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Redis answers again: cache generations are shared across nodes")]
    private static partial void LogRedisBack(ILogger logger);
}
