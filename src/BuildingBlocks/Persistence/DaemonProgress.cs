using JasperFx.Events.Projections;
using Marten;

namespace ModularChat.BuildingBlocks.Persistence;

/// <summary>
/// How far Marten's asynchronous daemon has read the event store. Events removed from the store (a deleted conversation's
/// stream and its summary stream, a retention compaction) before the daemon read them are a problem twice over: above its high-water mark they
/// look like a transaction still in flight, and it holds every asynchronous projection for its stale-gap time (3 s)
/// before it skips them; and a projection that has not read them never sees them (search would never index messages
/// that are archived, not deleted). So what removes events waits for the daemon first, for a bounded time (ADR 0009).
/// </summary>
public static class DaemonProgress
{
    /// <summary>The daemon's high-water mark (every event up to it is committed and visible to it) and the lowest
    /// sequence that every asynchronous projection has processed (0 while one has not started).</summary>
    public static async Task<(long HighWaterMark, long SlowestProjection)> ReadAsync(IDocumentStore store, CancellationToken cancellationToken)
    {
        var progress = (await store.Advanced.AllProjectionProgress(token: cancellationToken)).ToDictionary(p => p.ShardName, p => p.Sequence);
        var highWater = progress.GetValueOrDefault(ShardState.HighWaterMark);
        var shards = ((StoreOptions)store.Options).Projections.AllShards();
        var slowest = shards.Count == 0 ? highWater : shards.Min(s => progress.GetValueOrDefault(s.Name.Identity));
        return (highWater, slowest);
    }

    /// <summary>The event store's sequence number of a stream's last event, in the session's tenant (0: it has none).</summary>
    public static Task<long> LastEventAsync(IQuerySession session, Guid streamId, CancellationToken cancellationToken)
        => session.Events.QueryAllRawEvents()
            .Where(e => e.StreamId == streamId)
            .OrderByDescending(e => e.Sequence)
            .Select(e => e.Sequence)
            .FirstOrDefaultAsync(cancellationToken);

    /// <summary>
    /// Whether a stream whose last event is <paramref name="lastEvent"/> may be removed now: not while the high-water mark
    /// is below it, unless it has waited <paramref name="maxWait"/> since <paramref name="since"/> (then it goes, unread).
    /// </summary>
    public static async Task<StreamRemoval> CheckRemovalAsync(
        IDocumentStore store, long lastEvent, DateTimeOffset since, TimeSpan maxWait, TimeProvider clock, CancellationToken cancellationToken)
    {
        var (highWater, _) = await ReadAsync(store, cancellationToken);
        var waited = clock.GetUtcNow() - since;
        var unread = highWater < lastEvent;
        return new StreamRemoval(Wait: unread && waited < maxWait, Unread: unread, highWater, waited);
    }

    /// <summary>The pause before the next look at the daemon: 0.5 s, doubling with each attempt, at most 30 s.</summary>
    public static TimeSpan RecheckDelay(int attempt)
        => TimeSpan.FromTicks(Math.Min(TimeSpan.FromSeconds(30).Ticks, TimeSpan.FromMilliseconds(500).Ticks << Math.Clamp(attempt, 0, 16)));
}

/// <summary>What <see cref="DaemonProgress.CheckRemovalAsync"/> found.</summary>
/// <param name="Wait">Put the removal off (<see cref="DaemonProgress.RecheckDelay"/>).</param>
/// <param name="Unread">The daemon has not read the stream's last event (when not waiting: it goes anyway, worth a warning).</param>
public sealed record StreamRemoval(bool Wait, bool Unread, long HighWaterMark, TimeSpan Waited);
