using System.Buffers;
using Microsoft.Extensions.Caching.Distributed;
using StackExchange.Redis;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// HybridCache's L2, skipped while Redis is disconnected: a read is a miss and a write is dropped at once,
/// instead of each waiting for a connection timeout and logging an error. Requests keep being served from
/// the in-process L1 and the database; readiness reports Redis as degraded meanwhile.
/// </summary>
internal sealed class ConnectedOnlyDistributedCache(IBufferDistributedCache inner, IConnectionMultiplexer redis) : IBufferDistributedCache
{
    private bool Up => redis.IsConnected;

    public byte[]? Get(string key) => Up ? inner.Get(key) : null;

    public Task<byte[]?> GetAsync(string key, CancellationToken token = default) => Up ? inner.GetAsync(key, token) : Task.FromResult<byte[]?>(null);

    public void Set(string key, byte[] value, DistributedCacheEntryOptions options)
    {
        if (Up)
        {
            inner.Set(key, value, options);
        }
    }

    public Task SetAsync(string key, byte[] value, DistributedCacheEntryOptions options, CancellationToken token = default)
        => Up ? inner.SetAsync(key, value, options, token) : Task.CompletedTask;

    public void Refresh(string key)
    {
        if (Up)
        {
            inner.Refresh(key);
        }
    }

    public Task RefreshAsync(string key, CancellationToken token = default) => Up ? inner.RefreshAsync(key, token) : Task.CompletedTask;

    public void Remove(string key)
    {
        if (Up)
        {
            inner.Remove(key);
        }
    }

    public Task RemoveAsync(string key, CancellationToken token = default) => Up ? inner.RemoveAsync(key, token) : Task.CompletedTask;

    public bool TryGet(string key, IBufferWriter<byte> destination) => Up && inner.TryGet(key, destination);

    public ValueTask<bool> TryGetAsync(string key, IBufferWriter<byte> destination, CancellationToken token = default)
        => Up ? inner.TryGetAsync(key, destination, token) : ValueTask.FromResult(false);

    public void Set(string key, ReadOnlySequence<byte> value, DistributedCacheEntryOptions options)
    {
        if (Up)
        {
            inner.Set(key, value, options);
        }
    }

    public ValueTask SetAsync(string key, ReadOnlySequence<byte> value, DistributedCacheEntryOptions options, CancellationToken token = default)
        => Up ? inner.SetAsync(key, value, options, token) : ValueTask.CompletedTask;
}
