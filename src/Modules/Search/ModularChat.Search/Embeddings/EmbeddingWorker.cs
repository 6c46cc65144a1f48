using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Security;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Search.Storage;
using ModularChat.Search.Vectors;
using Npgsql;
using NpgsqlTypes;

namespace ModularChat.Search.Embeddings;

/// <summary>
/// Embeds entries in the background, never in the request that appended them: takes due rows of the pending
/// queue (several nodes share it safely with SKIP LOCKED and a lease), embeds them with the tenant's current model
/// (skipping those whose stored vector already has the same model and text), and stores the vectors. Tenants are
/// embedded side by side, at most <see cref="SearchEmbeddingOptions.MaxConcurrentTenants"/> at once and each by one claim
/// at a time, so one tenant's slow model or large backlog does not hold back the others. Failures
/// are retried with exponential back-off. Every <see cref="SearchEmbeddingOptions.ModelCheckInterval"/>, and when a
/// search notices a tenant's model for the first time, tenants whose model changed get all their entries queued again.
/// A stopping node claims nothing more and checks no model (<see cref="SharedBackgroundWork"/>): the rows stay queued for
/// the other nodes. Claimed rows it has not begun to embed are given back at once, due and with no attempt counted; those
/// it is embedding are stored, or given back the same way if the host stops the worker first.
/// </summary>
internal sealed partial class EmbeddingWorker(
    SearchDatabase database,
    TenantEmbedders embedders,
    IOptions<SearchOptions> options,
    SearchMetrics metrics,
    AppendBursts bursts,
    ITokenCounter tokens,
    TimeProvider clock,
    NodeStopping nodeStopping,
    ILogger<EmbeddingWorker> logger) : SharedBackgroundWork(nodeStopping)
{
    private static readonly TimeSpan Lease = TimeSpan.FromMinutes(5);

    private readonly SearchEmbeddingOptions _options = options.Value.Embeddings;
    private readonly RepeatedFailures _failures = new(logger, "The search embedding worker", options.Value.Embeddings.PollInterval);
    private readonly VectorPrecision _precision = options.Value.VectorIndex.Precision;
    private readonly ConcurrentQueue<string> _modelChecks = new();
    private readonly ConcurrentDictionary<string, string> _seenModels = new(StringComparer.Ordinal);

    /// <summary>
    /// The tenants whose claimed rows this node is embedding or waiting for a place to (the next claims leave their rows
    /// to later); fewer than the places means none waits and one is free.
    /// </summary>
    private readonly ConcurrentDictionary<string, byte> _inFlight = new(StringComparer.Ordinal);

    /// <summary>The tenants' places: how many tenants' claimed rows are embedded at once.</summary>
    private SemaphoreSlim? _places;
    private readonly SemaphoreSlim _wake = new(0, 1);
    private long _lastModelSweep;

    /// <summary>Called by searches: the first time a tenant's model is seen (or it changes), its stored vectors are checked against it.</summary>
    public void NoteModelInUse(string tenantId, string model)
    {
        if (_seenModels.TryGetValue(tenantId, out var seen) && seen == model)
        {
            return;
        }

        _seenModels[tenantId] = model;
        _modelChecks.Enqueue(tenantId);
        Wake();
    }

    /// <summary>Asks the worker to look at the queue now rather than at its next poll.</summary>
    public void Wake()
    {
        if (_wake.CurrentCount == 0)
        {
            try
            {
                _wake.Release();
            }
            catch (SemaphoreFullException)
            {
                // Already signalled.
            }
        }
    }

    protected override async Task ExecuteAsync(CancellationToken newWork, CancellationToken stoppingToken)
    {
        if (!_options.WorkerEnabled)
        {
            return;
        }

        _lastModelSweep = clock.GetTimestamp();
        _places = new SemaphoreSlim(_options.MaxConcurrentTenants);
        var running = new HashSet<Task>();
        // When a claim that left tenants out found nothing: the next such claim waits for the poll interval, as finding that
        // out walks the due rows of the tenants left out (an import's backlog), and a tenant's embedding ends every few
        // hundred rows.
        long? foundNothingAt = null;
        while (!newWork.IsCancellationRequested)
        {
            running.RemoveWhere(t => t.IsCompleted);
            var full = false;
            var failed = false;
            try
            {
                await YieldToBurstAsync(newWork);
                await CheckModelsAsync(newWork);
                var leftOut = _inFlight.Keys.ToArray();
                var mayClaim = leftOut.Length < _options.MaxConcurrentTenants
                    && (leftOut.Length == 0 || foundNothingAt is not { } at || clock.GetElapsedTime(at) >= _options.PollInterval);
                if (mayClaim && !newWork.IsCancellationRequested)
                {
                    // Not cut by the stop once begun: rows leased by a commit whose answer was lost would wait out their lease.
                    var (groups, rows) = await ClaimAsync(leftOut, stoppingToken);
                    foundNothingAt = rows == 0 && leftOut.Length > 0 ? clock.GetTimestamp() : null;
                    full = rows == _options.BatchSize * 4;
                    foreach (var group in groups)
                    {
                        running.Add(EmbedTenantAsync(group.Key, [.. group], newWork, stoppingToken));
                    }
                }

                _failures.Succeeded();
            }
            catch (OperationCanceledException) when (newWork.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                // Never let an unexpected error stop the host; the queue is durable, the next round retries. A failure that
                // repeats (the database away) is logged once, and the rounds draw apart (RepeatedFailures).
                _failures.Failed(e);
                failed = true;
            }

            var wait = failed ? _failures.Wait : _options.PollInterval;
            if (!full || failed)
            {
                // Nothing more due for a tenant not already being embedded, or every place taken: a tenant's embedding that
                // ends wakes the worker, as do searches noticing a new model.
                try
                {
                    await _wake.WaitAsync(wait, newWork);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }

        // Stopping: the tenants' embeddings under way finish (until the host stops the worker); each gives back what it does not store.
        try
        {
            await Task.WhenAll(running);
        }
        catch (Exception e) when (e is OperationCanceledException || stoppingToken.IsCancellationRequested)
        {
            // Cancelled with the host.
        }
    }

    /// <summary>
    /// While this node ingests a burst of appends, waits for it to end, or until the oldest due row of the queue is
    /// <see cref="BuildingBlocks.Background.BackgroundOptions.MaxYieldLag"/> old.
    /// </summary>
    private async Task YieldToBurstAsync(CancellationToken cancellationToken)
    {
        if (bursts.InBurst && await OldestDueAsync(cancellationToken) is { } due)
        {
            await bursts.YieldAsync(due, "search.embedding", cancellationToken);
        }
    }

    /// <summary>When the longest-waiting due row of the queue became due, if any is.</summary>
    private async Task<DateTimeOffset?> OldestDueAsync(CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await using var batch = QueueBatch(connection, transaction);
        batch.BatchCommands.Add(new NpgsqlBatchCommand($"select min(not_before) from {database.Schema.Pending} where not_before <= now()"));
        var due = await batch.ExecuteScalarAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return due is DateTime at ? new DateTimeOffset(at, TimeSpan.Zero) : null;
    }

    /// <summary>
    /// Leases the longest-waiting due queue rows of tenants not in <paramref name="leftOut"/> (those this node is embedding
    /// already), grouped by tenant, and marks those tenants in flight; returns the groups and how many rows they hold.
    /// </summary>
    private async Task<(List<IGrouping<string, Claim>> Groups, int Rows)> ClaimAsync(string[] leftOut, CancellationToken cancellationToken)
    {
        var claimed = new List<Claim>();
        await using (var connection = await database.OpenAsync(cancellationToken))
        await using (var transaction = await connection.BeginTransactionAsync(cancellationToken))
        {
            await using (var batch = QueueBatch(connection, transaction))
            {
                var claim = new NpgsqlBatchCommand(ClaimSql(database.Schema));
                claim.Parameters.Add(new NpgsqlParameter { Value = _options.BatchSize * 4 });
                claim.Parameters.Add(new NpgsqlParameter { Value = Lease });
                claim.Parameters.Add(new NpgsqlParameter { Value = leftOut, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
                batch.BatchCommands.Add(claim);
                await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
                while (await reader.ReadAsync(cancellationToken))
                {
                    claimed.Add(new Claim(reader.GetFieldValue<NpgsqlTid>(0), reader.GetString(1), reader.GetGuid(2), reader.GetInt32(3),
                        DateTime.SpecifyKind(reader.GetFieldValue<DateTime>(4), DateTimeKind.Utc)));
                }
            }

            await transaction.CommitAsync(cancellationToken);
        }

        var groups = claimed.GroupBy(c => c.Tenant, StringComparer.Ordinal).ToList();
        foreach (var group in groups)
        {
            _inFlight.TryAdd(group.Key, 0);
        }

        return (groups, claimed.Count);
    }

    /// <summary>
    /// Embeds one tenant's claimed rows, beside the other tenants' (each call waits on that tenant's own model), and puts
    /// back what it could not embed; then lets the worker claim that tenant's next rows. Rows still waiting for a place when
    /// the node begins to stop (<paramref name="newWork"/>), or not stored when the host stops the worker, are given back.
    /// </summary>
    private async Task EmbedTenantAsync(string tenantId, Claim[] claims, CancellationToken newWork, CancellationToken cancellationToken)
    {
        var placed = false;
        try
        {
            // Off the worker's loop at once: the loop goes on claiming for other tenants while this one waits on its model.
            await Task.Yield();
            await _places!.WaitAsync(newWork);
            placed = true;
            var (notEmbedded, refused) = await EmbedAsync(tenantId, claims, cancellationToken);
            // An entry the model has refused on its own at its last allowed attempt is given up; the others wait for their next.
            var givenUp = notEmbedded.Where(c => refused.Contains(c.Entry) && GivesUp(c.Attempts + 1)).ToArray();
            if (givenUp.Length > 0)
            {
                await GiveUpAsync(givenUp, CancellationToken.None);
            }

            if (givenUp.Length < notEmbedded.Length)
            {
                await DeferAsync([.. notEmbedded.Except(givenUp)], CancellationToken.None);
            }
        }
        catch (OperationCanceledException) when (!placed && newWork.IsCancellationRequested)
        {
            // The node began to stop while they waited for a place: another node embeds them.
            await ReleaseAsync(claims);
        }
        catch (OperationCanceledException) when (placed && cancellationToken.IsCancellationRequested)
        {
            // The host stopped the worker while they were being embedded: that was not this node's to finish, another node embeds them.
            await ReleaseAsync(claims);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            LogEmbeddingFailed(logger, tenantId, claims.Length, claims.Max(c => c.Attempts) + 1, e.GetType().Name, e.Message);
            metrics.EmbeddingFailed();
            await DeferAsync(claims, CancellationToken.None);
        }
        finally
        {
            if (placed)
            {
                _places!.Release();
            }

            _inFlight.TryRemove(tenantId, out _);
            Wake();
        }
    }

    /// <summary>Reads claimed entries ($1 tenant, $2 ids) with the model and text hash of their current vectors.</summary>
    /// <param name="float32Vectors">Also reads the vectors stored in float32 (to quantize them for an int8 index).</param>
    internal static string ReadSql(SearchSchema schema, bool float32Vectors = false) => $"""
        select e.id, e.conversation_id, e.kind, e.sequence, e.revision, e.role, e.speaker, e.created_at, e.content, v.model, v.text_hash,
               v.dimensions, octet_length(v.vector),
               {(float32Vectors ? "case when octet_length(v.vector) = v.dimensions * 4 then v.vector end" : "null::bytea")}
        from {schema.EntriesById(1, 2)}
        left join {schema.Vectors} v on v.tenant_id = e.tenant_id and v.entry_id = e.id
        """;

    /// <summary>A queue row this worker leased: where it is (ctid), whose entry, and until when.</summary>
    internal readonly record struct Claim(NpgsqlTid Row, string Tenant, Guid Entry, int Attempts, DateTime Lease);

    /// <summary>
    /// Run first in the transaction of every statement on the queue: plan them for the queue as it is now. Npgsql prepares
    /// statements that run often, and PostgreSQL then keeps one plan for all their executions, made for the queue as
    /// it was when the plan was made: one made while it was empty scanned and sorted all of it later, at every claim
    /// (0.1-0.4 s at ~100,000 rows).
    /// </summary>
    internal const string PlannedForThisQueue = "set local plan_cache_mode = force_custom_plan";

    /// <summary>
    /// A batch for statements on the queue, <see cref="PlannedForThisQueue"/> first, in the same round trip (Npgsql's
    /// readers and scalars skip its empty result).
    /// </summary>
    private static NpgsqlBatch QueueBatch(NpgsqlConnection connection, NpgsqlTransaction transaction)
        => new(connection, transaction) { BatchCommands = { new NpgsqlBatchCommand(PlannedForThisQueue) } };

    /// <summary>
    /// Leases up to $1 due rows for $2, the longest-waiting of tenants not in $3, and returns them with their row addresses.
    /// The queue's statistics are stale by nature (it fills and empties between two ANALYZEs, and one that finds it empty
    /// makes every scan of it look like a row), so the rows are found by their addresses: with the lease taken in a join
    /// on the key, PostgreSQL planned the locking subquery once per queued row (13 s per claim at ~50,000 rows).
    /// </summary>
    internal static string ClaimSql(SearchSchema schema) => $"""
        update {schema.Pending} p set not_before = now() + $2::interval
        where p.ctid = any(array(select ctid from {schema.Pending} where not_before <= now() and tenant_id <> all($3::text[])
                                 order by not_before limit $1 for update skip locked))
        returning p.ctid, p.tenant_id, p.entry_id, p.attempts, p.not_before
        """;

    /// <summary>
    /// The claimed rows ($1 addresses, $2 entries, $3 leases) that are still as this worker leased them: an entry queued
    /// again meanwhile (a rebuild, a model change) was written anew, at another address or with another lease, and
    /// stays queued. Only the addresses can select rows, so no statistics can turn this into a scan of the queue
    /// (the join on the key it replaces matched every queued row against every claimed one: 28 s).
    /// </summary>
    private const string StillLeased = """
        ctid = any($1::text[]::tid[])
        and entry_id = ($2::uuid[])[array_position($1::text[], ctid::text)]
        and not_before = ($3::timestamptz[])[array_position($1::text[], ctid::text)]
        """;

    /// <summary>Takes the claimed rows that are still leased off the queue.</summary>
    internal static string DequeueSql(SearchSchema schema) => $"delete from {schema.Pending} where {StillLeased}";

    /// <summary>Puts the claimed rows that are still leased back, due after $4, one attempt more.</summary>
    internal static string DeferSql(SearchSchema schema)
        => $"update {schema.Pending} set attempts = attempts + 1, not_before = now() + $4::interval where {StillLeased}";

    /// <summary>Gives the claimed rows that are still leased back, due now, with no attempt counted (the node stops).</summary>
    internal static string ReleaseSql(SearchSchema schema) => $"update {schema.Pending} set not_before = now() where {StillLeased}";

    /// <summary>How long a stopping worker tries to give its claimed rows back (their leases expire on their own otherwise).</summary>
    private static readonly TimeSpan ReleaseTimeout = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Leaves the claimed rows that are still leased on the queue, one attempt more, never due (until queued again): PostgreSQL
    /// 15 has no infinite interval, so the time itself is <c>infinity</c>.
    /// </summary>
    internal static string GiveUpSql(SearchSchema schema)
        => $"update {schema.Pending} set attempts = attempts + 1, not_before = 'infinity' where {StillLeased}";

    /// <summary>The parameters of <see cref="StillLeased"/> for these claims.</summary>
    internal static NpgsqlParameter[] ClaimParameters(IReadOnlyCollection<Claim> claims) =>
    [
        // As text: Npgsql writes a tid, not an array of them.
        new() { Value = claims.Select(c => string.Create(CultureInfo.InvariantCulture, $"({c.Row.BlockNumber},{c.Row.OffsetNumber})")).ToArray() },
        new() { Value = claims.Select(c => c.Entry).ToArray() },
        new() { Value = claims.Select(c => c.Lease).ToArray() },
    ];

    /// <summary>
    /// Embeds the claimed entries of one tenant and stores what it could; returns the claims of the entries it could not
    /// embed (to be retried later), and which of those the model refused on their own. A model that fails (an error, a
    /// rate limit, no answer) leaves every entry not yet embedded for later. A model that refuses the input of a call
    /// (HTTP 400, 413, 422) usually refuses one text among several (one longer than the model takes): the call is then
    /// split until that text is alone, so the others are stored and only it waits, instead of it holding back every entry
    /// claimed with it, at every retry.
    /// </summary>
    private async Task<(Claim[] NotEmbedded, HashSet<Guid> Refused)> EmbedAsync(string tenantId, Claim[] claims, CancellationToken cancellationToken)
    {
        var entryIds = claims.Select(c => c.Entry).ToArray();
        var schema = database.Schema;
        var embedder = await embedders.ForTenantAsync(tenantId, cancellationToken);
        var work = new List<Work>();
        await using (var connection = await database.OpenAsync(cancellationToken))
        await using (var read = new NpgsqlCommand(ReadSql(schema, _precision == VectorPrecision.Int8), connection))
        {
            read.Parameters.Add(new NpgsqlParameter { Value = tenantId });
            read.Parameters.Add(new NpgsqlParameter { Value = entryIds });
            await using var reader = await read.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                var kind = (EntryKind)reader.GetInt16(2);
                var text = EmbeddingText.For(kind, reader.IsDBNull(6) ? null : reader.GetString(6), reader.GetString(8), reader.GetFieldValue<DateTime>(7),
                    _options.MaxInputTokens, tokens);
                var fingerprint = EmbeddingText.Fingerprint(text);
                var sameEmbedding = !reader.IsDBNull(9) && reader.GetString(9) == embedder.Model && reader.GetInt64(10) == fingerprint;
                var format = sameEmbedding ? VectorBytes.FormatOf(reader.GetInt32(12), reader.GetInt32(11)) : null;
                if (format == _precision)
                {
                    continue;
                }

                // A vector of another format (the precision setting changed since) is written again in this one. The model's
                // floats of a float32 vector are quantized here, without asking the model (a paid call, for what it answered
                // before); an int8 vector cannot give the floats back, so for float32 the entry is embedded again.
                var floats = format == VectorPrecision.Float32 && _precision == VectorPrecision.Int8
                    ? VectorBytes.Decode(reader.GetFieldValue<byte[]>(13), reader.GetInt32(11))
                    : null;
                work.Add(new Work(reader.GetGuid(0), reader.GetGuid(1), kind, reader.GetInt64(3), reader.IsDBNull(4) ? null : reader.GetInt32(4),
                    reader.IsDBNull(5) ? null : reader.GetString(5), reader.GetFieldValue<DateTime>(7), text, fingerprint, floats));
            }
        }

        using var activity = ModularChatTelemetry.ActivitySource.StartActivity("search.embed");
        activity?.SetTag("search.model", embedder.Model);
        activity?.SetTag("search.entries", work.Count);
        // In work order: the stored floats where there are some, the model's answer for the rest (null while it has none).
        var vectors = work.Select(w => w.Floats).ToArray();
        var toEmbed = Enumerable.Range(0, work.Count).Where(i => vectors[i] is null).ToArray();
        var started = Stopwatch.GetTimestamp();
        var (refused, failure) = await GenerateAsync(embedder, work, vectors, toEmbed, cancellationToken);
        var embedded = toEmbed.Count(i => vectors[i] is not null);
        if (embedded > 0)
        {
            metrics.Embedded(embedded, embedder.BuiltIn is not null, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }

        var attempts = claims.ToDictionary(c => c.Entry, c => c.Attempts + 1);
        foreach (var (index, error) in refused)
        {
            var (entry, attempt) = (work[index], attempts[work[index].Id]);
            if (GivesUp(attempt))
            {
                LogEntryGivenUp(logger, tenantId, entry.Id, entry.ConversationId, entry.Text.Length, attempt, error.GetType().Name, error.Message);
            }
            else
            {
                LogEntryRefused(logger, tenantId, entry.Id, entry.ConversationId, entry.Text.Length, attempt, error.GetType().Name, error.Message);
            }

            metrics.EmbeddingFailed();
        }

        var waiting = toEmbed.Where(i => vectors[i] is null).Select(i => work[i].Id).ToHashSet();
        if (failure is not null)
        {
            var left = waiting.Count - refused.Count;
            LogEmbeddingFailed(logger, tenantId, left, work.Where(w => waiting.Contains(w.Id)).Max(w => attempts[w.Id]), failure.GetType().Name, failure.Message);
            metrics.EmbeddingFailed();
        }

        var done = work.Where((_, i) => vectors[i] is not null).ToList();
        var complete = vectors.OfType<float[]>().ToArray();
        foreach (var vector in complete)
        {
            if (vector.Length == 0 || vector.Length != complete[0].Length || vector.Any(v => !float.IsFinite(v)))
            {
                throw new InvalidOperationException($"The embedding model returned an invalid vector ({vector.Length} dimensions).");
            }
        }

        var processed = claims.Where(c => !waiting.Contains(c.Entry)).ToArray();
        if (processed.Length > 0)
        {
            await StoreAsync(tenantId, embedder.Model, processed, done, complete, cancellationToken);
        }

        return (claims.Where(c => waiting.Contains(c.Entry)).ToArray(), refused.Select(r => work[r.Index].Id).ToHashSet());
    }

    /// <summary>
    /// Asks the model for the vectors of the texts at <paramref name="toEmbed"/>, <see cref="SearchEmbeddingOptions.BatchSize"/>
    /// at a time, and writes them into <paramref name="vectors"/>. Returns the texts the model refused on their own, and
    /// the failure that stopped it early (the texts it had not embedded then are left without a vector).
    /// </summary>
    private async Task<(List<(int Index, Exception Error)> Refused, Exception? Failure)> GenerateAsync(
        TenantEmbedder embedder, List<Work> work, float[]?[] vectors, int[] toEmbed, CancellationToken cancellationToken)
    {
        var refused = new List<(int Index, Exception Error)>();
        foreach (var chunk in toEmbed.Chunk(_options.BatchSize))
        {
            try
            {
                await EmbedChunkAsync(chunk, isolate: true);
            }
            catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                return (refused, e);
            }
        }

        return (refused, null);

        async Task EmbedChunkAsync(int[] chunk, bool isolate)
        {
            if (chunk.Length == 0)
            {
                return;
            }

            try
            {
                await CallAsync(chunk);
            }
            catch (Exception refusal) when (ModelFailures.RefusedTheInput(refusal))
            {
                if (chunk.Length == 1)
                {
                    refused.Add((chunk[0], refusal));
                    return;
                }

                if (isolate)
                {
                    // One text, or every text? The shortest alone tells (a model that refuses it refuses anything: a wrong
                    // model name, a parameter it does not take), at the price of one call: only then is the chunk split,
                    // which for one refused text among 64 takes ~12 calls, and would for every text take 127.
                    var shortest = chunk.MinBy(i => work[i].Text.Length);
                    try
                    {
                        await CallAsync([shortest]);
                    }
                    catch (Exception again) when (ModelFailures.RefusedTheInput(again))
                    {
                        throw new ModelRefusedEveryInputException(refusal);
                    }

                    chunk = [.. chunk.Where(i => i != shortest)];
                }

                await EmbedChunkAsync(chunk[..(chunk.Length / 2)], isolate: false);
                await EmbedChunkAsync(chunk[(chunk.Length / 2)..], isolate: false);
            }
        }

        async Task CallAsync(int[] chunk)
        {
            var embeddings = await embedder.Generator.GenerateAsync(chunk.Select(i => work[i].Text), cancellationToken: cancellationToken);
            if (embeddings.Count != chunk.Length)
            {
                throw new InvalidOperationException($"The embedding model returned {embeddings.Count} vectors for {chunk.Length} texts.");
            }

            for (var i = 0; i < chunk.Length; i++)
            {
                vectors[chunk[i]] = embeddings[i].Vector.ToArray();
            }
        }
    }

    /// <summary>Stores the vectors of entries that still exist and takes every processed entry off the queue, in one transaction.</summary>
    private async Task StoreAsync(
        string tenantId, string model, Claim[] processed, List<Work> work, float[][] vectors, CancellationToken cancellationToken)
    {
        var schema = database.Schema;
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await using var batch = QueueBatch(connection, transaction);
        if (work.Count > 0)
        {
            // Entries are share-locked first: a conversation deleted meanwhile either waits for this commit (and then deletes these
            // vectors too) or is already gone (and nothing is written).
            var store = new NpgsqlBatchCommand($"""
                with live as materialized (
                    select e.id from {schema.EntriesById(1, 2, "for share")}
                ),
                x as (
                    select * from unnest($2::uuid[], $3::uuid[], $4::smallint[], $5::bigint[], $6::integer[], $7::varchar[], $8::timestamptz[],
                                         $9::bytea[], $10::bigint[], $11::text[])
                        as x(entry_id, conversation_id, kind, sequence, revision, role, created_at, vector, text_hash, terms)
                )
                insert into {schema.Vectors} as v (tenant_id, entry_id, conversation_id, kind, sequence, revision, role, created_at, model, dimensions,
                                                  vector, text_hash, terms)
                select $1, x.entry_id, x.conversation_id, x.kind, x.sequence, x.revision, x.role, x.created_at, $12, $13, x.vector, x.text_hash,
                       x.terms::integer[]
                from x join live on live.id = x.entry_id
                on conflict (tenant_id, entry_id) do update set
                    conversation_id = excluded.conversation_id, kind = excluded.kind, sequence = excluded.sequence, revision = excluded.revision,
                    role = excluded.role, created_at = excluded.created_at, model = excluded.model, dimensions = excluded.dimensions,
                    vector = excluded.vector, text_hash = excluded.text_hash, terms = excluded.terms,
                    txid = pg_current_xact_id(), updated_at = now()
                """);
            store.Parameters.Add(new NpgsqlParameter { Value = tenantId });
            store.Parameters.Add(new NpgsqlParameter { Value = work.Select(w => w.Id).ToArray() });
            store.Parameters.Add(new NpgsqlParameter { Value = work.Select(w => w.ConversationId).ToArray() });
            store.Parameters.Add(new NpgsqlParameter { Value = work.Select(w => (short)w.Kind).ToArray() });
            store.Parameters.Add(new NpgsqlParameter { Value = work.Select(w => w.Sequence).ToArray() });
            store.Parameters.Add(new NpgsqlParameter { Value = work.Select(w => w.Revision).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Integer });
            store.Parameters.Add(new NpgsqlParameter { Value = work.Select(w => w.Role).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Varchar });
            store.Parameters.Add(new NpgsqlParameter { Value = work.Select(w => DateTime.SpecifyKind(w.CreatedAt, DateTimeKind.Utc)).ToArray() });
            store.Parameters.Add(new NpgsqlParameter { Value = vectors.Select(v => VectorBytes.Encode(v, _precision)).ToArray() });
            store.Parameters.Add(new NpgsqlParameter { Value = work.Select(w => w.Fingerprint).ToArray() });
            store.Parameters.Add(new NpgsqlParameter { Value = work.Select(w => TermsLiteral(TextAnalyzer.TermIds(w.Text))).ToArray() });
            store.Parameters.Add(new NpgsqlParameter { Value = model });
            store.Parameters.Add(new NpgsqlParameter { Value = vectors[0].Length });
            batch.BatchCommands.Add(store);
        }

        var dequeue = new NpgsqlBatchCommand(DequeueSql(schema));
        dequeue.Parameters.AddRange(ClaimParameters(processed));
        batch.BatchCommands.Add(dequeue);

        // The tenant's first vectors record the model they are made with. Later ones leave the record as it is: it says which
        // model the tenant's vectors were all last queued for, and only the model check, which queues them all again for
        // the model of now, may change it (a vector of the new model stored first made the check find nothing changed).
        var noteModel = new NpgsqlBatchCommand($"""
            insert into {schema.Models} (tenant_id, model, checked_at) values ($1, $2, now())
            on conflict (tenant_id) do nothing
            """);
        noteModel.Parameters.Add(new NpgsqlParameter { Value = tenantId });
        noteModel.Parameters.Add(new NpgsqlParameter { Value = model });
        batch.BatchCommands.Add(noteModel);

        await batch.ExecuteNonQueryAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
    }

    /// <summary>Whether an entry the model refused on its own at <paramref name="attempt"/> is given up.</summary>
    private bool GivesUp(int attempt) => attempt >= _options.MaxRefusedAttempts;

    /// <summary>Gives <paramref name="claims"/> back to the queue for any node, within <see cref="ReleaseTimeout"/>, as the node stops.</summary>
    private async Task ReleaseAsync(Claim[] claims)
    {
        using var timeout = new CancellationTokenSource(ReleaseTimeout);
        await PutBackAsync(claims, ReleaseSql(database.Schema), null, timeout.Token);
    }

    /// <summary>Puts claimed rows back for later, after the back-off of their next attempt.</summary>
    private Task DeferAsync(Claim[] claims, CancellationToken cancellationToken)
    {
        var attempts = claims.Max(c => c.Attempts) + 1;
        var delay = TimeSpan.FromSeconds(Math.Min(3600, _options.RetryDelay.TotalSeconds * Math.Pow(2, Math.Min(attempts - 1, 20))));
        return PutBackAsync(claims, DeferSql(database.Schema), delay, cancellationToken);
    }

    /// <summary>
    /// Leaves entries the model kept refusing on the queue, never due (<c>infinity</c>): out of the claims and of the status's
    /// pending entries, counted as refused, until a model change or a rebuild queues them again (which makes them due).
    /// </summary>
    private async Task GiveUpAsync(Claim[] claims, CancellationToken cancellationToken)
    {
        metrics.EmbeddingsGivenUp(claims.Length);
        await PutBackAsync(claims, GiveUpSql(database.Schema), null, cancellationToken);
    }

    /// <summary>Puts claimed rows back with <paramref name="sql"/> (<see cref="DeferSql"/> with its delay, or <see cref="GiveUpSql"/>).</summary>
    private async Task PutBackAsync(Claim[] claims, string sql, TimeSpan? delay, CancellationToken cancellationToken)
    {
        try
        {
            await using var connection = await database.OpenAsync(cancellationToken);
            await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
            await using var batch = QueueBatch(connection, transaction);
            var defer = new NpgsqlBatchCommand(sql);
            defer.Parameters.AddRange(ClaimParameters(claims));
            if (delay is { } after)
            {
                defer.Parameters.Add(new NpgsqlParameter { Value = after });
            }
            batch.BatchCommands.Add(defer);
            await batch.ExecuteNonQueryAsync(cancellationToken);
            await transaction.CommitAsync(cancellationToken);
        }
        catch (NpgsqlException e)
        {
            // The lease expires on its own: the rows come back due then. Met by the worker's rounds too while the database is
            // away: one series of failures, so the outage is one warning, whichever meets it first.
            _failures.Failed(e);
        }
    }

    /// <summary>Queues every entry of tenants whose embedding model is no longer the one their vectors were made with.</summary>
    private async Task CheckModelsAsync(CancellationToken cancellationToken)
    {
        var tenants = new HashSet<string>(StringComparer.Ordinal);
        while (_modelChecks.TryDequeue(out var tenant))
        {
            tenants.Add(tenant);
        }

        var now = clock.GetTimestamp();
        var sweep = clock.GetElapsedTime(_lastModelSweep, now) >= _options.ModelCheckInterval;
        if (tenants.Count == 0 && !sweep)
        {
            return;
        }

        if (sweep)
        {
            _lastModelSweep = now;
        }

        var schema = database.Schema;
        var stored = new List<(string Tenant, string Model)>();
        await using (var connection = await database.OpenAsync(cancellationToken))
        await using (var read = new NpgsqlCommand(
            sweep ? $"select tenant_id, model from {schema.Models}" : $"select tenant_id, model from {schema.Models} where tenant_id = any($1)", connection))
        {
            if (!sweep)
            {
                read.Parameters.Add(new NpgsqlParameter { Value = tenants.ToArray() });
            }

            await using var reader = await read.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                stored.Add((reader.GetString(0), reader.GetString(1)));
            }
        }

        foreach (var (tenant, model) in stored)
        {
            var current = await embedders.ForTenantAsync(tenant, cancellationToken);
            if (current.Model == model)
            {
                continue;
            }

            await using var connection = await database.OpenAsync(cancellationToken);
            await using var requeue = new NpgsqlCommand($"""
                with queued as (
                    insert into {schema.Pending} (tenant_id, entry_id, conversation_id)
                    select tenant_id, id, conversation_id from {schema.Entries} where tenant_id = $1
                    on conflict (tenant_id, entry_id) do update set attempts = 0, not_before = now()
                    returning 1
                )
                update {schema.Models} set model = $2, checked_at = now() where tenant_id = $1
                returning (select count(*) from queued)
                """, connection);
            requeue.Parameters.Add(new NpgsqlParameter { Value = tenant });
            requeue.Parameters.Add(new NpgsqlParameter { Value = current.Model });
            var queued = await requeue.ExecuteScalarAsync(cancellationToken);
            LogModelChanged(logger, tenant, model, current.Model, Convert.ToInt64(queued ?? 0, CultureInfo.InvariantCulture));
        }
    }

    private static string TermsLiteral(int[] terms) => "{" + string.Join(',', terms.Select(t => t.ToString(CultureInfo.InvariantCulture))) + "}";

    /// <param name="Floats">The model's vector as stored before in float32, to be written again in int8; null: to embed.</param>
    private sealed record Work(
        Guid Id, Guid ConversationId, EntryKind Kind, long Sequence, int? Revision, string? Role, DateTime CreatedAt, string Text, long Fingerprint,
        float[]? Floats);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Embedding {Count} search entries of tenant {TenantId} failed (attempt {Attempts}, {ErrorType}: {Error}); they are retried later")]
    private static partial void LogEmbeddingFailed(ILogger logger, string tenantId, int count, int attempts, string errorType, string error);

    [LoggerMessage(Level = LogLevel.Error, Message = "The embedding model of tenant {TenantId} refused search entry {EntryId} of conversation {ConversationId} on its own again ({Length} characters, attempt {Attempts} of Search:Embeddings:MaxRefusedAttempts, {ErrorType}: {Error}); it is no longer retried and stays out of semantic search (keyword search finds it) until the tenant's embedding model changes or search is rebuilt")]
    private static partial void LogEntryGivenUp(
        ILogger logger, string tenantId, Guid entryId, Guid conversationId, int length, int attempts, string errorType, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The embedding model of tenant {TenantId} refused search entry {EntryId} of conversation {ConversationId} ({Length} characters, attempt {Attempts}, {ErrorType}: {Error}); the entries claimed with it are stored, it is retried later")]
    private static partial void LogEntryRefused(
        ILogger logger, string tenantId, Guid entryId, Guid conversationId, int length, int attempts, string errorType, string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "The embedding model of tenant {TenantId} changed from {OldModel} to {NewModel}: {Count} entries queued for embedding")]
    private static partial void LogModelChanged(ILogger logger, string tenantId, string oldModel, string newModel, long count);

    /// <summary>The model refused a call's inputs and also the shortest of them alone: it refuses any input, not one of them.</summary>
    private sealed class ModelRefusedEveryInputException(Exception refusal)
        : Exception($"The model refuses every input, even the shortest alone: {refusal.Message}", refusal);
}
