using JasperFx.Events.Projections;
using Marten;
using Npgsql;

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
        var (highWater, projections) = await ReadEachAsync(store, cancellationToken);
        return (highWater, projections.Count == 0 ? highWater : projections.Values.Min());
    }

    /// <summary>The daemon's high-water mark and the sequence each asynchronous projection (shard) has processed (0 while it has not started).</summary>
    public static async Task<(long HighWaterMark, IReadOnlyDictionary<string, long> Projections)> ReadEachAsync(IDocumentStore store, CancellationToken cancellationToken)
    {
        var progress = (await store.Advanced.AllProjectionProgress(token: cancellationToken)).ToDictionary(p => p.ShardName, p => p.Sequence);
        var projections = ((StoreOptions)store.Options).Projections.AllShards()
            .ToDictionary(s => s.Name.Identity, s => progress.GetValueOrDefault(s.Name.Identity), StringComparer.Ordinal);
        return (progress.GetValueOrDefault(ShardState.HighWaterMark), projections);
    }

    /// <summary>
    /// Removes a stream (its events and its row) of tenant <paramref name="tenantId"/> once every asynchronous projection has
    /// read its last event, or unread once <paramref name="maxWait"/> has passed since <paramref name="since"/>; otherwise
    /// removes nothing and answers <see cref="StreamRemoval.Wait"/>.
    /// </summary>
    /// <remarks>
    /// The slowest projection, not the high-water mark (which it never passes): a projection behind the mark (search
    /// indexing steps aside for append bursts, ADR 0008) would read the stream's last appends, index them once the search
    /// tombstone of the deleted conversation had expired, and never read the deletion that takes them out again, removed
    /// with the stream.
    /// <para>
    /// One transaction that locks the stream's row before it reads the last event: an append in flight holds that row (its
    /// events' foreign key, or the version update) until it commits, so its events are counted; one that starts later
    /// waits for the removal and then fails on the missing stream. Reading the last event first and deleting afterwards
    /// (as this did before) removed a revision committed in between, above the high-water mark: the daemon stood still on
    /// the hole for its stale-gap time, then skipped it.
    /// </para>
    /// </remarks>
    public static async Task<StreamRemoval> RemoveStreamAsync(
        IDocumentStore store, string tenantId, Guid streamId, DateTimeOffset since, TimeSpan maxWait, TimeProvider clock, CancellationToken cancellationToken)
    {
        var events = store.Options.Schema.ForEvents();
        var streams = store.Options.Schema.ForStreams();
        await using var connection = await store.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);

        // Separate statements: the read must see what a writer it waited for committed (a new snapshot).
        if (await ScalarAsync(connection, $"select 1 from {streams} where id = @stream and tenant_id = @tenant for update", streamId, tenantId, cancellationToken) is null)
        {
            return new StreamRemoval(Wait: false, Unread: false, Found: false, LastEvent: 0, SlowestProjection: 0, clock.GetUtcNow() - since);
        }

        var last = (long)(await ScalarAsync(connection, $"select coalesce(max(seq_id), 0) from {events} where stream_id = @stream and tenant_id = @tenant", streamId, tenantId, cancellationToken))!;
        var (_, slowest) = await ReadAsync(store, cancellationToken);
        var waited = clock.GetUtcNow() - since;
        var unread = slowest < last;
        var removal = new StreamRemoval(Wait: unread && waited < maxWait, Unread: unread, Found: true, last, slowest, waited);
        if (removal.Wait)
        {
            return removal; // the transaction rolls back, releasing the row
        }

        await ScalarAsync(connection, $"delete from {events} where stream_id = @stream and tenant_id = @tenant", streamId, tenantId, cancellationToken);
        await ScalarAsync(connection, $"delete from {streams} where id = @stream and tenant_id = @tenant", streamId, tenantId, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return removal;
    }

    private static async Task<object?> ScalarAsync(NpgsqlConnection connection, string sql, Guid streamId, string tenantId, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        command.Parameters.AddWithValue("stream", streamId);
        command.Parameters.AddWithValue("tenant", tenantId);
        return await command.ExecuteScalarAsync(cancellationToken);
    }

    /// <summary>The pause before the next look at the daemon: 0.5 s, doubling with each attempt, at most 30 s.</summary>
    public static TimeSpan RecheckDelay(int attempt)
        => TimeSpan.FromTicks(Math.Min(TimeSpan.FromSeconds(30).Ticks, TimeSpan.FromMilliseconds(500).Ticks << Math.Clamp(attempt, 0, 16)));
}

/// <summary>What <see cref="DaemonProgress.RemoveStreamAsync"/> found (and did).</summary>
/// <param name="Wait">Nothing was removed: put the removal off (<see cref="DaemonProgress.RecheckDelay"/>).</param>
/// <param name="Unread">A projection has not read the stream's last event (when not waiting: it goes anyway, worth a warning).</param>
/// <param name="Found">The stream was there (false: removed already, nothing done).</param>
/// <param name="SlowestProjection">The lowest sequence every asynchronous projection has processed.</param>
public sealed record StreamRemoval(bool Wait, bool Unread, bool Found, long LastEvent, long SlowestProjection, TimeSpan Waited);
