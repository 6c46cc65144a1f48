using System.Buffers;
using Microsoft.Extensions.Caching.Distributed;
using ModularChat.BuildingBlocks.Caching;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// HybridCache's L2, skipped while Redis is not usable (disconnected, or failing or timing out within the last
/// <see cref="RedisAvailability.RetryInterval"/>): a read is a miss and a write or removal is dropped at once, instead of
/// each waiting for a timeout and failing the request. A command that fails counts as a miss or a dropped write too,
/// and makes the node leave Redis alone for a while. Requests keep being served from the in-process L1 and the database;
/// readiness reports Redis as degraded meanwhile.
/// </summary>
internal sealed class ConnectedOnlyDistributedCache(IBufferDistributedCache inner, RedisAvailability redis) : IBufferDistributedCache
{
    public byte[]? Get(string key) => redis.Try(() => inner.Get(key), null);

    public Task<byte[]?> GetAsync(string key, CancellationToken token = default) => redis.TryAsync(() => inner.GetAsync(key, token), null);

    public void Set(string key, byte[] value, DistributedCacheEntryOptions options) => redis.Try(() => inner.Set(key, value, options));

    public Task SetAsync(string key, byte[] value, DistributedCacheEntryOptions options, CancellationToken token = default)
        => redis.TryAsync(() => inner.SetAsync(key, value, options, token));

    public void Refresh(string key) => redis.Try(() => inner.Refresh(key));

    public Task RefreshAsync(string key, CancellationToken token = default) => redis.TryAsync(() => inner.RefreshAsync(key, token));

    public void Remove(string key) => redis.Try(() => inner.Remove(key));

    public Task RemoveAsync(string key, CancellationToken token = default) => redis.TryAsync(() => inner.RemoveAsync(key, token));

    public bool TryGet(string key, IBufferWriter<byte> destination) => redis.Try(() => inner.TryGet(key, destination), false);

    public async ValueTask<bool> TryGetAsync(string key, IBufferWriter<byte> destination, CancellationToken token = default)
        => await redis.TryAsync(async () => await inner.TryGetAsync(key, destination, token), false);

    public void Set(string key, ReadOnlySequence<byte> value, DistributedCacheEntryOptions options)
        => redis.Try(() => inner.Set(key, value, options));

    public async ValueTask SetAsync(string key, ReadOnlySequence<byte> value, DistributedCacheEntryOptions options, CancellationToken token = default)
        => await redis.TryAsync(async () => await inner.SetAsync(key, value, options, token));
}
