using Microsoft.Extensions.Caching.Distributed;
using Microsoft.Extensions.Caching.Hybrid;
using Microsoft.Extensions.Caching.StackExchangeRedis;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Caching;
using ModularChat.BuildingBlocks.Options;
using StackExchange.Redis;

namespace ModularChat.Host.Infrastructure;

internal static partial class CachingSetup
{
    /// <summary>
    /// HybridCache: in-process L1 always, Redis as L2 when ConnectionStrings:Redis is set.
    /// Without Redis the service runs on L1 alone and says so when it starts.
    /// </summary>
    public static IServiceCollection AddModularChatCaching(this IServiceCollection services, IConfiguration configuration)
    {
        var keyPrefix = RedisKeyPrefix(configuration);
        var redis = configuration.GetConnectionString("Redis");
        if (!string.IsNullOrWhiteSpace(redis))
        {
            ConfigurationOptions options;
            try
            {
                options = ConfigurationOptions.Parse(redis);
                if (options.EndPoints.Count == 0)
                {
                    throw new ArgumentException("no host:port is given");
                }
            }
            catch (ArgumentException e)
            {
                // The value is not repeated: it may hold the password.
                throw new StartRefusedException(
                    $"Configuration 'ConnectionStrings:Redis' is not a valid Redis connection string (host:port, then options such as password=...): {e.Message}", e);
            }

            // Start and keep serving when Redis is down; reconnect in the background.
            options.AbortOnConnectFail = false;
            // A cache that does not answer within 2 s is treated as down (RedisAvailability), unless the connection string says otherwise.
            var given = redis.ToLowerInvariant();
            bool Given(string setting) => given.Contains(setting + "=", StringComparison.Ordinal);
            options.ConnectTimeout = Given("connecttimeout") ? options.ConnectTimeout : 2000;
            options.SyncTimeout = Given("synctimeout") ? options.SyncTimeout : 2000;
            options.AsyncTimeout = Given("asynctimeout") ? options.AsyncTimeout : 2000;

            // A cache must not make requests wait for a Redis that is gone: fail at once while disconnected.
            options.BacklogPolicy = BacklogPolicy.FailFast;
            services.AddSingleton<IConnectionMultiplexer>(_ => ConnectionMultiplexer.Connect(options));
            services.AddSingleton<IConfigureOptions<RedisCacheOptions>>(sp => new UseSharedMultiplexer(sp, keyPrefix));
            services.AddSingleton(sp => new RedisCache(sp.GetRequiredService<IOptions<RedisCacheOptions>>()));
            services.AddSingleton<IDistributedCache>(sp => new ConnectedOnlyDistributedCache(
                sp.GetRequiredService<RedisCache>(), sp.GetRequiredService<RedisAvailability>()));
        }

        var retryInterval = PersistenceSetup.Positive(configuration, "Cache:RedisRetryInterval", TimeSpan.FromSeconds(5));

        services.AddSingleton(sp => new RedisAvailability(
            sp.GetService<IConnectionMultiplexer>(), retryInterval, sp.GetRequiredService<ILogger<RedisAvailability>>()));
        // A context is as large as the budget asked for (up to Context:MaxMaxTokens): HybridCache's default of 1 MiB left
        // every context of more than ~250,000 tokens uncached, with an error logged on each read.
        var maxEntryBytes = configuration.GetValue("Cache:MaxEntryBytes", 16L * 1024 * 1024);
        if (maxEntryBytes is < 64 * 1024 or > 1024L * 1024 * 1024)
        {
            throw new StartRefusedException($"Configuration 'Cache:MaxEntryBytes' must be between 65536 (64 KiB) and 1073741824 (1 GiB), not {maxEntryBytes}.");
        }

        var bumpWait = PersistenceSetup.Positive(configuration, "Cache:BumpWait", CacheGenerations.DefaultBumpWait);
        if (bumpWait > TimeSpan.FromSeconds(30))
        {
            throw new StartRefusedException($"Configuration 'Cache:BumpWait' must be at most 30 s (was {bumpWait}).");
        }

        services.AddHybridCache(o => o.MaximumPayloadBytes = maxEntryBytes);
        services.AddSingleton(sp => new CacheGenerations(
            sp.GetRequiredService<RedisAvailability>(), sp.GetRequiredService<HybridCache>(), keyPrefix: keyPrefix,
            logger: sp.GetRequiredService<ILogger<CacheGenerations>>(), bumpWait: bumpWait));
        services.AddHostedService(sp => sp.GetRequiredService<CacheGenerations>());
        services.AddHostedService(sp => new ReportCacheMode(sp, keyPrefix, sp.GetRequiredService<ILogger<ReportCacheMode>>()));
        return services;
    }

    /// <summary>
    /// <c>Cache:RedisKeyPrefix</c>: what every key and the channel start with (letters, digits and <c>:_-.</c>, at most
    /// 64). Without braces, so no key's Redis Cluster hash tag is the prefix (every key would land on one shard).
    /// </summary>
    private static string RedisKeyPrefix(IConfiguration configuration)
    {
        var prefix = configuration["Cache:RedisKeyPrefix"] ?? CacheGenerations.DefaultKeyPrefix;
        if (prefix.Length is 0 or > 64 || !prefix.All(c => char.IsAsciiLetterOrDigit(c) || c is ':' or '_' or '-' or '.'))
        {
            throw new StartRefusedException(
                $"Configuration 'Cache:RedisKeyPrefix' must be 1 to 64 ASCII letters, digits or ':', '_', '-', '.', not \"{prefix}\".");
        }

        return prefix;
    }

    private sealed class UseSharedMultiplexer(IServiceProvider services, string keyPrefix) : IConfigureOptions<RedisCacheOptions>
    {
        public void Configure(RedisCacheOptions options)
        {
            options.InstanceName = keyPrefix;
            options.ConnectionMultiplexerFactory = () => Task.FromResult(services.GetRequiredService<IConnectionMultiplexer>());
        }
    }

    private sealed partial class ReportCacheMode(IServiceProvider services, string keyPrefix, ILogger<ReportCacheMode> logger) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken)
        {
            var redis = services.GetService<IConnectionMultiplexer>();
            if (redis is null)
            {
                LogNoRedis(logger);
            }
            else if (!redis.IsConnected)
            {
                LogRedisDown(logger, EndPoints(redis));
            }
            else
            {
                LogRedis(logger, EndPoints(redis), keyPrefix);
            }

            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        /// <summary>Where Redis is, without the rest of the connection string (it may hold a user and password).</summary>
        private static string EndPoints(IConnectionMultiplexer redis) => string.Join(", ", redis.GetEndPoints().Select(e => e.ToString()));

        [LoggerMessage(Level = LogLevel.Warning, Message = "Redis is not configured (ConnectionStrings:Redis): caching runs in-process only, and cache invalidations do not reach other nodes")]
        private static partial void LogNoRedis(ILogger logger);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Redis at {Redis} is not reachable: serving from the in-process cache and the database until it is")]
        private static partial void LogRedisDown(ILogger logger, string redis);

        [LoggerMessage(Level = LogLevel.Information, Message = "Cache: in-process L1 with Redis L2 at {Redis}, keys prefixed {RedisKeyPrefix}")]
        private static partial void LogRedis(ILogger logger, string redis, string redisKeyPrefix);
    }
}
