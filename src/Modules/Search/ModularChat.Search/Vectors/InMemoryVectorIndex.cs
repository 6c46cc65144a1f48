using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.Search.Storage;
using Npgsql;

namespace ModularChat.Search.Vectors;

/// <summary>
/// The in-process vector index: per tenant and model, a copy of the vectors in PostgreSQL, loaded on first use,
/// caught up with PostgreSQL before a search when older than the refresh interval, and evicted when idle or over
/// the memory budget. Every node reads the same tables, so all nodes converge on the same results.
/// </summary>
/// <remarks>
/// Catching up is exact without locks: every vector row and tombstone carries the id of the transaction that
/// wrote it. A refresh first reads the oldest transaction still running (the snapshot's xmin) and then the rows
/// written by transactions from the previous such horizon on; rows of transactions that commit later have ids at
/// or above the new horizon and are read on the next refresh. A rebuild bumps a generation number, which makes
/// every node reload.
/// </remarks>
internal sealed partial class InMemoryVectorIndex(
    SearchDatabase database, IOptions<SearchOptions> options, TimeProvider clock, ILogger<InMemoryVectorIndex> logger) : IVectorIndex
{
    private readonly ConcurrentDictionary<string, TenantVectorSet> _tenants = new(StringComparer.Ordinal);
    private readonly VectorIndexOptions _options = options.Value.VectorIndex;
    private long _lastSweepTicks;

    public async Task<IReadOnlyList<VectorCandidate>> SearchAsync(string tenantId, string model, VectorQuery query, CancellationToken cancellationToken)
        => (await AcquireAsync(tenantId, model, cancellationToken)).Search(query);

    public async Task<float[]> InverseDocumentFrequenciesAsync(string tenantId, string model, IReadOnlyList<int> termIds, CancellationToken cancellationToken)
        => (await AcquireAsync(tenantId, model, cancellationToken)).InverseDocumentFrequencies(termIds);

    public async Task<IReadOnlyDictionary<Guid, float[]>> GetVectorsAsync(
        string tenantId, string model, IReadOnlyCollection<Guid> entryIds, CancellationToken cancellationToken)
        => (await AcquireAsync(tenantId, model, cancellationToken)).Vectors(entryIds);

    public async Task<IReadOnlyList<RelatedConversationScore>> RelatedAsync(
        string tenantId, string model, Guid conversationId, int limit, float summaryWeight, CancellationToken cancellationToken,
        IReadOnlySet<Guid>? among = null)
        => (await AcquireAsync(tenantId, model, cancellationToken)).Related(conversationId, limit, summaryWeight, among);

    public async Task<int> CountAsync(string tenantId, string model, CancellationToken cancellationToken)
        => (await AcquireAsync(tenantId, model, cancellationToken)).Count;

    public VectorIndexStatistics Statistics()
    {
        var sets = _tenants.Values.ToArray();
        return new VectorIndexStatistics(sets.Length, sets.Sum(s => (long)s.Count), sets.Sum(s => s.Bytes));
    }

    /// <summary>The tenant's vectors of <paramref name="model"/>, caught up with PostgreSQL when older than the refresh interval.</summary>
    private async Task<TenantVectorSet> AcquireAsync(string tenantId, string model, CancellationToken cancellationToken)
    {
        var now = clock.GetTimestamp();
        var set = _tenants.GetOrAdd(tenantId, t => new TenantVectorSet(t, model, _options.Precision));
        if (set.Model != model)
        {
            // The tenant's embedding model changed: vectors of the old one cannot be compared with new queries.
            var replacement = new TenantVectorSet(tenantId, model, _options.Precision);
            set = _tenants.AddOrUpdate(tenantId, replacement, (_, current) => current.Model == model ? current : replacement);
        }

        set.LastUsedTicks = now;
        if (!set.Loaded || clock.GetElapsedTime(set.LastRefreshTicks, now) >= _options.RefreshInterval)
        {
            await RefreshAsync(set, cancellationToken);
        }

        Sweep(now, set);
        return set;
    }

    private async Task RefreshAsync(TenantVectorSet set, CancellationToken cancellationToken)
    {
        await set.RefreshGate.WaitAsync(cancellationToken);
        try
        {
            var started = clock.GetTimestamp();
            if (set.Loaded && clock.GetElapsedTime(set.LastRefreshTicks, started) < _options.RefreshInterval)
            {
                return; // another search refreshed it while this one waited
            }

            // A set not refreshed for IdleEviction is read again whole, as if it had been evicted (Sweep evicts idle sets only
            // when some search runs): the tombstones and removed ranges an incremental catch-up relies on live only
            // TombstoneLifetime (at least IdleEviction), so past it the deletions since the set's horizon may be gone.
            var stale = set.Loaded && clock.GetElapsedTime(set.LastRefreshTicks, started) >= _options.IdleEviction;
            if (!await CatchUpAsync(set, full: !set.Loaded || stale, cancellationToken))
            {
                await CatchUpAsync(set, full: true, cancellationToken); // a rebuild happened: start over
            }

            set.LastRefreshTicks = started;
        }
        finally
        {
            set.RefreshGate.Release();
        }
    }

    /// <summary>Reads what changed since the set's horizon (or everything); false when the generation changed and a full load is needed.</summary>
    private async Task<bool> CatchUpAsync(TenantVectorSet set, bool full, CancellationToken cancellationToken)
    {
        var started = clock.GetTimestamp();
        var schema = database.Schema;
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var batch = new NpgsqlBatch(connection);
        // The horizon first: anything committed by a transaction older than it is visible to the reads after it.
        batch.BatchCommands.Add(new NpgsqlBatchCommand(
            $"select pg_snapshot_xmin(pg_current_snapshot())::text, coalesce((select generation from {schema.State} where id = 1), 0)"));
        if (full)
        {
            batch.BatchCommands.Add(Command($"{SelectVectors(schema)} where tenant_id = $1 and model = $2", set.TenantId, set.Model));
        }
        else
        {
            var horizon = set.Horizon.ToString(CultureInfo.InvariantCulture);
            batch.BatchCommands.Add(Command($"{SelectVectors(schema)} where tenant_id = $1 and txid >= $2::text::xid8", set.TenantId, horizon));
            batch.BatchCommands.Add(Command(
                $"select conversation_id from {schema.Deletions} where tenant_id = $1 and txid >= $2::text::xid8", set.TenantId, horizon));
            batch.BatchCommands.Add(Command(
                $"select conversation_id, from_sequence, to_sequence from {schema.RemovedRanges} where tenant_id = $1 and txid >= $2::text::xid8",
                set.TenantId, horizon));
        }

        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        var horizonNow = ulong.Parse(reader.GetString(0), CultureInfo.InvariantCulture);
        var generation = reader.GetInt64(1);
        if (!full && generation != set.Generation)
        {
            return false;
        }

        await reader.NextResultAsync(cancellationToken);
        var rows = new List<VectorRow>();
        while (await reader.ReadAsync(cancellationToken))
        {
            rows.Add(ReadRow(reader));
        }

        var deleted = new List<Guid>();
        var removed = new List<RemovedMessages>();
        if (!full && await reader.NextResultAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                deleted.Add(reader.GetGuid(0));
            }

            await reader.NextResultAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                removed.Add(new RemovedMessages(reader.GetGuid(0), reader.GetInt64(1), reader.GetInt64(2)));
            }
        }

        set.Apply(rows, deleted, removed, reset: full);
        set.Horizon = horizonNow;
        set.Generation = generation;
        set.Loaded = true;
        if (full)
        {
            LogLoaded(logger, set.TenantId, set.Model, rows.Count, clock.GetElapsedTime(started).TotalMilliseconds);
        }

        return true;
    }

    /// <summary>Drops tenants idle for too long, then the least recently used ones while over the memory budget.</summary>
    private void Sweep(long now, TenantVectorSet current)
    {
        var last = Interlocked.Read(ref _lastSweepTicks);
        if (clock.GetElapsedTime(last, now) < TimeSpan.FromSeconds(5) || Interlocked.CompareExchange(ref _lastSweepTicks, now, last) != last)
        {
            return;
        }

        foreach (var (tenant, set) in _tenants)
        {
            if (set != current && clock.GetElapsedTime(set.LastUsedTicks, now) > _options.IdleEviction)
            {
                _tenants.TryRemove(new KeyValuePair<string, TenantVectorSet>(tenant, set));
            }
        }

        var budget = (long)_options.MaxMemoryMegabytes * 1024 * 1024;
        var total = _tenants.Values.Sum(s => s.Bytes);
        foreach (var set in _tenants.Values.OrderBy(s => s.LastUsedTicks))
        {
            if (total <= budget)
            {
                break;
            }

            if (set != current && _tenants.TryRemove(new KeyValuePair<string, TenantVectorSet>(set.TenantId, set)))
            {
                total -= set.Bytes;
                LogEvicted(logger, set.TenantId, set.Bytes);
            }
        }
    }

    private static string SelectVectors(SearchSchema schema)
        => $"select entry_id, conversation_id, kind, sequence, revision, role, created_at, model, vector, terms, dimensions from {schema.Vectors}";

    private static NpgsqlBatchCommand Command(string sql, params object[] parameters)
    {
        var command = new NpgsqlBatchCommand(sql);
        foreach (var parameter in parameters)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = parameter });
        }

        return command;
    }

    private static VectorRow ReadRow(NpgsqlDataReader reader) => new(
        reader.GetGuid(0),
        reader.GetGuid(1),
        (EntryKind)reader.GetInt16(2),
        reader.GetInt64(3),
        reader.IsDBNull(4) ? null : reader.GetInt32(4),
        reader.IsDBNull(5) ? null : reader.GetString(5),
        reader.GetFieldValue<DateTimeOffset>(6),
        reader.GetString(7),
        reader.GetFieldValue<byte[]>(8),
        reader.GetInt32(10),
        reader.GetFieldValue<int[]>(9));

    [LoggerMessage(Level = LogLevel.Information, Message = "Loaded {Count} vectors of tenant {TenantId} (model {Model}) into memory in {Milliseconds:F0} ms")]
    private static partial void LogLoaded(ILogger logger, string tenantId, string model, int count, double milliseconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Evicted the vectors of tenant {TenantId} from memory ({Bytes} bytes) to stay within the memory budget")]
    private static partial void LogEvicted(ILogger logger, string tenantId, long bytes);
}
