using System.Diagnostics;
using JasperFx;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Jobs;
using Npgsql;
using NpgsqlTypes;
using Wolverine;

namespace ModularChat.Summaries.Features.Sweep;

/// <summary>What a sweep does.</summary>
/// <param name="Resummarize">Rebuild every summary from its first message (after a strategy or model change), not only missing or stale ones.</param>
/// <param name="TenantId">Only this tenant's conversations (all tenants when null).</param>
public sealed record SweepRequest(bool Resummarize = false, string? TenantId = null);

/// <summary>Where a sweep is.</summary>
/// <param name="Examined">Conversations read from the read model.</param>
/// <param name="Queued">Jobs queued.</param>
/// <param name="Finished">Queued jobs seen done.</param>
/// <param name="Unfinished">Queued jobs not seen done within the wait (still queued, retrying or dead-lettered).</param>
/// <param name="Waiting">Queued jobs the sweep is still waiting for.</param>
public sealed record SweepProgress(long Examined, long Queued, long Finished, long Unfinished, long Waiting);

/// <summary>A sweep's outcome; <see cref="Ran"/> is false when another node was sweeping.</summary>
public sealed record SweepResult(bool Ran, Guid SweepId, bool Resummarize, long Examined, long Queued, long Finished, long Unfinished, DateTimeOffset StartedAt, TimeSpan Duration);

/// <summary>
/// Finds conversations whose summary is missing or stale from the <see cref="ConversationActivity"/> read model (never by
/// scanning messages) and queues them in pages, with at most <see cref="SummarySweepOptions.MaxInFlight"/> of its jobs
/// outstanding at a time. One node at a time: a PostgreSQL advisory lock is held for the whole sweep.
/// </summary>
public sealed partial class SummarySweep(
    IDocumentStore store,
    IConversationMessages conversations,
    IServiceScopeFactory scopes,
    SummarySettingsResolver settingsResolver,
    IOptions<SummariesOptions> options,
    TimeProvider clock,
    ILogger<SummarySweep> logger)
{
    /// <summary>The advisory lock key of sweeps ("SUMSWEEP").</summary>
    internal const long LockKey = 0x53554D5357454550;

    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(250);

    /// <summary>Longest time between two progress reports while jobs are awaited (half the job wait when that is shorter).</summary>
    private static readonly TimeSpan MaxReportInterval = TimeSpan.FromSeconds(10);

    public async Task<SweepResult> RunAsync(SweepRequest request, Action<SweepProgress>? report, CancellationToken cancellationToken)
    {
        var sweepId = Guid.CreateVersion7();
        var startedAt = clock.GetUtcNow();
        var started = Stopwatch.GetTimestamp();
        await using var held = await ClusterLock.TryAcquireAsync(store, LockKey, cancellationToken);
        if (held is null)
        {
            LogBusy(logger);
            return new SweepResult(false, sweepId, request.Resummarize, 0, 0, 0, 0, startedAt, TimeSpan.Zero);
        }

        LogStarted(logger, sweepId, request.Resummarize, request.TenantId ?? "all");
        var counts = await SweepAsync(sweepId, request, report, cancellationToken);
        var result = new SweepResult(true, sweepId, request.Resummarize, counts.Examined, counts.Queued, counts.Finished, counts.Unfinished,
            startedAt, Stopwatch.GetElapsedTime(started));
        LogFinished(logger, sweepId, result.Examined, result.Queued, result.Finished, result.Unfinished, (long)result.Duration.TotalMilliseconds);
        return result;
    }

    private async Task<SweepProgress> SweepAsync(Guid sweepId, SweepRequest request, Action<SweepProgress>? report, CancellationToken cancellationToken)
    {
        var sweep = options.Value.Sweep;
        var pendingTimeout = options.Value.PendingJobTimeout;
        long examined = 0, queued = 0, finished = 0, unfinished = 0;
        var inFlight = new Dictionary<(string Tenant, Guid Id), (SummarizeConversation Job, DateTimeOffset Deadline)>();
        await using var scope = scopes.CreateAsyncScope();
        var bus = scope.ServiceProvider.GetRequiredService<IMessageBus>();
        var caughtUp = await CatchUpActivityAsync(request.TenantId, sweep.BatchSize, bus, cancellationToken);
        if (caughtUp > 0)
        {
            LogCaughtUp(logger, sweepId, caughtUp);
        }

        (string, Guid)? after = null;
        while (true)
        {
            var page = await ReadPageAsync(request.TenantId, after, sweep.BatchSize, cancellationToken);
            if (page.Count == 0)
            {
                break;
            }

            after = (page[^1].Activity.TenantId!, page[^1].Activity.Id);
            examined += page.Count;
            await ClearCoveredMarksAsync(page, cancellationToken);
            var now = clock.GetUtcNow();
            foreach (var (activity, progress) in page)
            {
                var tenant = activity.TenantId!;
                var job = Candidate(sweepId, request.Resummarize, activity, progress, settingsResolver.For(tenant), now, pendingTimeout);
                if (job is null)
                {
                    continue;
                }

                while (inFlight.Count >= sweep.MaxInFlight)
                {
                    var (done, late) = await SettleAsync(inFlight, sweepId, wait: true, cancellationToken);
                    finished += done;
                    unfinished += late;
                    report?.Invoke(new SweepProgress(examined, queued, finished, unfinished, inFlight.Count));
                }

                await bus.PublishAsync(job, new DeliveryOptions { TenantId = tenant });
                inFlight[(tenant, activity.Id)] = (job, clock.GetUtcNow() + sweep.JobWait);
                queued++;
            }

            report?.Invoke(new SweepProgress(examined, queued, finished, unfinished, inFlight.Count));
        }

        while (inFlight.Count > 0)
        {
            var (done, late) = await SettleAsync(inFlight, sweepId, wait: true, cancellationToken);
            finished += done;
            unfinished += late;
            report?.Invoke(new SweepProgress(examined, queued, finished, unfinished, inFlight.Count));
        }

        return new SweepProgress(examined, queued, finished, unfinished, 0);
    }

    /// <summary>
    /// Brings up to date the activity of conversations whose appends this module did not follow (their notices were lost:
    /// dead-lettered when the database was away, before handlers waited for it; or queued by builds before 2026-12-01,
    /// whose notice type is gone), so the pass that follows finds the summaries they need. A conversation without an
    /// activity row was invisible to sweeps. Reads the conversations a page at a time and writes only the rows behind.
    /// </summary>
    private async Task<long> CatchUpActivityAsync(string? tenantId, int pageSize, IMessageBus bus, CancellationToken cancellationToken)
    {
        long caughtUp = 0;
        (string, Guid)? after = null;
        while (true)
        {
            var page = await conversations.ListTalliesAsync(tenantId, after, pageSize, cancellationToken);
            if (page.Count == 0)
            {
                return caughtUp;
            }

            after = (page[^1].TenantId, page[^1].ConversationId);
            var settled = clock.GetUtcNow() - options.Value.Sweep.NoticeSettle;
            foreach (var tenant in page.Where(t => t.LastActivityAt < settled).GroupBy(t => t.TenantId))
            {
                IReadOnlyList<ConversationActivity> known;
                await using (var session = store.QuerySession(tenant.Key))
                {
                    known = await session.LoadManyAsync<ConversationActivity>(cancellationToken, tenant.Select(t => t.ConversationId));
                }

                var followed = known.ToDictionary(a => a.Id);
                foreach (var tally in tenant.Where(t => !followed.TryGetValue(t.ConversationId, out var a) || IsBehind(a, t.MessageCount)))
                {
                    if (await CatchUpAsync(tally, cancellationToken))
                    {
                        caughtUp++;
                        // As for a conversation met for the first time: one deleted meanwhile loses the row again.
                        await bus.PublishAsync(new VerifySummarizedConversation(tally.ConversationId), new DeliveryOptions { TenantId = tally.TenantId });
                    }
                }
            }
        }
    }

    /// <summary>
    /// Whether a conversation's activity misses some of its <paramref name="messageCount"/> messages: notices of the last ones
    /// never came, a gap below ranges counted ahead never closed (a notice lost in the middle; the sweep looks only at
    /// conversations quiet for <see cref="SummarySweepOptions.NoticeSettle"/>, so a notice still on its way is not taken for lost),
    /// or a gap was given up as counted when there were too many (<see cref="ConversationActivity.GapGivenUpTo"/>).
    /// </summary>
    private static bool IsBehind(ConversationActivity activity, long messageCount)
        => activity.LastSequence < messageCount || activity.CountedAhead.Count > 0 || activity.GapGivenUpTo > 0;

    /// <summary>Writes one conversation's activity as its counts say (false: it was up to date by the time it looked again).</summary>
    private async Task<bool> CatchUpAsync(ConversationTally tally, CancellationToken cancellationToken)
    {
        for (var attempt = 0; attempt < 3; attempt++)
        {
            await using var session = store.LightweightSession(tally.TenantId);
            var activity = await session.LoadAsync<ConversationActivity>(tally.ConversationId, cancellationToken);
            if (activity is not null && !IsBehind(activity, tally.MessageCount))
            {
                return false;
            }

            var isNew = activity is null;
            activity ??= new ConversationActivity { Id = tally.ConversationId };
            activity.LastSequence = Math.Max(activity.LastSequence, tally.MessageCount);
            activity.TotalTokens = Math.Max(activity.TotalTokens, tally.TotalTokens);
            activity.CountedUpTo(tally.MessageCount); // a notice about these messages still on its way must not count them again
            if (tally.LastActivityAt > activity.LastAppendedAt)
            {
                activity.LastAppendedAt = tally.LastActivityAt;
            }

            if (isNew)
            {
                session.Insert(activity);
            }
            else
            {
                session.Store(activity);
            }

            try
            {
                await session.SaveChangesAsync(cancellationToken);
                return true;
            }
            catch (Exception e) when (e is ConcurrencyException or DocumentAlreadyExistsException)
            {
                // A notice's handler wrote the row meanwhile: look again.
            }
        }

        return false;
    }

    /// <summary>The job a conversation needs, if any: every conversation on a rebuild, else the ones the strategy finds due and nobody is working on.</summary>
    internal static SummarizeConversation? Candidate(
        Guid sweepId, bool resummarize, ConversationActivity activity, SummaryProgress? progress, SummarySettings settings, DateTimeOffset now, TimeSpan pendingTimeout)
    {
        if (activity.LastSequence == 0)
        {
            return null;
        }

        if (resummarize)
        {
            return new SummarizeConversation(activity.Id, activity.LastSequence, SummaryStrategy.Resummarize, null, sweepId);
        }

        var covered = progress?.CoveredTo ?? 0;
        var state = new SummaryState(activity.LastSequence, covered, Math.Max(0, activity.TotalTokens - (progress?.CoveredTokens ?? 0)), progress?.RevisedAt);
        var decision = SummaryStrategy.Decide(state, settings.Strategy, now);
        var pending = activity.PendingUpTo > covered && activity.PendingAt > now - pendingTimeout;

        // Due later (minimum interval): its scheduled job, or the next sweep, takes care of it.
        return decision.Due && decision.NotBefore is null && !pending
            ? new SummarizeConversation(activity.Id, activity.LastSequence, decision.Reason!, null)
            : null;
    }

    /// <summary>
    /// The statement that reads a page of activity rows after the key (<c>@afterTenant</c>, <c>@afterId</c>) in their primary
    /// key's order (tenant, id), the tenant's alone with <paramref name="oneTenant"/> (<c>@tenant</c>), each with its
    /// conversation's summary progress, at most <c>@limit</c>. Each page is a range of the primary key and a probe of the
    /// progress' per row: a sweep reads each row once. Before, pages were ordered by id alone across tenants, which no
    /// index serves, and the progress was looked up by id alone: each page sorted the whole table and scanned the
    /// progress' (about 50 ms and 70 ms a page at 200,000 conversations), so a sweep's work grew with the square of the
    /// conversations (about 2 min at 200,000, longer than the 15 min between sweeps by a million).
    /// </summary>
    internal static string PageSql(string activityTable, string progressTable, bool oneTenant) => $"""
        select a.tenant_id, a.data, (select p.data from {progressTable} p where p.tenant_id = a.tenant_id and p.id = a.id)
        from {activityTable} a
        where (a.tenant_id, a.id) > (@afterTenant, @afterId){(oneTenant ? " and a.tenant_id = @tenant" : "")}
        order by a.tenant_id, a.id
        limit @limit
        """;

    /// <summary>
    /// The statement that tells, for each (tenant, conversation) of <c>@tenants</c> and <c>@ids</c> (arrays of the same length),
    /// whether its activity row is still there and its summary progress: probes of both primary keys.
    /// </summary>
    internal static string SettleSql(string activityTable, string progressTable) => $"""
        select k.tenant_id, k.id,
               exists (select 1 from {activityTable} a where a.tenant_id = k.tenant_id and a.id = k.id),
               (select p.data from {progressTable} p where p.tenant_id = k.tenant_id and p.id = k.id)
        from unnest(@tenants::varchar[], @ids::uuid[]) as k(tenant_id, id)
        """;

    private async Task<List<(ConversationActivity Activity, SummaryProgress? Progress)>> ReadPageAsync(
        string? tenantId, (string Tenant, Guid Id)? after, int size, CancellationToken cancellationToken)
    {
        var sql = PageSql(store.Options.Schema.For<ConversationActivity>(), store.Options.Schema.For<SummaryProgress>(), tenantId is not null);
        await using var connection = store.Storage.Database.CreateConnection();
        await connection.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(sql, connection);
        // The first page starts after ("", the empty id): below every tenant's rows.
        command.Parameters.Add(new NpgsqlParameter("afterTenant", NpgsqlDbType.Varchar) { Value = after?.Tenant ?? "" });
        command.Parameters.Add(new NpgsqlParameter("afterId", NpgsqlDbType.Uuid) { Value = after?.Id ?? Guid.Empty });
        command.Parameters.Add(new NpgsqlParameter("limit", NpgsqlDbType.Integer) { Value = size });
        if (tenantId is not null)
        {
            command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Varchar) { Value = tenantId });
        }

        var serializer = store.Options.Serializer();
        var page = new List<(ConversationActivity, SummaryProgress?)>(size);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var tenant = reader.GetString(0);
            var activity = await serializer.FromJsonAsync<ConversationActivity>(reader, 1, cancellationToken);
            activity.TenantId = tenant;
            SummaryProgress? progress = null;
            if (!await reader.IsDBNullAsync(2, cancellationToken))
            {
                progress = await serializer.FromJsonAsync<SummaryProgress>(reader, 2, cancellationToken);
                progress.TenantId = tenant;
            }

            page.Add((activity, progress));
        }

        return page;
    }

    /// <summary>Drops the jobs seen done (or gone, or past their wait) from <paramref name="inFlight"/>; waits a little when none is.</summary>
    private async Task<(int Done, int Late)> SettleAsync(
        Dictionary<(string Tenant, Guid Id), (SummarizeConversation Job, DateTimeOffset Deadline)> inFlight, Guid sweepId, bool wait, CancellationToken cancellationToken)
    {
        // While jobs retry, nothing settles for up to the job wait: the progress is reported meanwhile all the same.
        var reportAt = clock.GetUtcNow() + TimeSpan.FromTicks(Math.Min(MaxReportInterval.Ticks, options.Value.Sweep.JobWait.Ticks / 2));
        while (true)
        {
            var (progress, existing) = await ReadInFlightAsync(inFlight.Keys, cancellationToken);
            int done = 0, late = 0;
            var now = clock.GetUtcNow();
            foreach (var (key, (job, deadline)) in inFlight.ToList())
            {
                var p = progress.GetValueOrDefault(key);
                var isDone = !existing.Contains(key)
                    || (job.RebuildId is not null ? p?.RebuildId == sweepId : p?.CoveredTo >= job.UpToSequence);
                if (isDone || now > deadline)
                {
                    inFlight.Remove(key);
                    if (isDone)
                    {
                        done++;
                    }
                    else
                    {
                        late++;
                    }
                }
            }

            if (done + late > 0 || !wait || inFlight.Count == 0 || now >= reportAt)
            {
                return (done, late);
            }

            await Task.Delay(PollInterval, clock, cancellationToken);
        }
    }

    /// <summary>
    /// The statement that clears the pending marks (<c>@tenants</c>, <c>@ids</c>, <c>@marks</c>) that their summary covers:
    /// each only if it is still that mark and still covered when the statement runs.
    /// </summary>
    internal static string ClearCoveredMarksSql(string activityTable, string progressTable) => $$"""
        update {{activityTable}} a {{SummaryWriter.ClearPendingMark}}
        from unnest(@tenants::varchar[], @ids::uuid[], @marks::bigint[]) as k(tenant_id, id, mark)
        where a.tenant_id = k.tenant_id and a.id = k.id and a.pending_up_to = k.mark
          and a.pending_up_to <= coalesce((select p.covered_to from {{progressTable}} p where p.tenant_id = a.tenant_id and p.id = a.id), 0)
        """;

    /// <summary>
    /// Clears the page's pending marks that their summary covers (0: no job pending), as a revision has done since
    /// 2026-12-07 (SummaryWriter): a mark left covered by an older build counted for nothing, but kept its conversation in
    /// the range that the backlog count reads from its index (<see cref="SummaryBacklogMonitor.CountSql"/>). A sweep after
    /// an upgrade brings them all to 0.
    /// </summary>
    private async Task ClearCoveredMarksAsync(List<(ConversationActivity Activity, SummaryProgress? Progress)> page, CancellationToken cancellationToken)
    {
        var covered = page.Where(p => p.Activity.PendingUpTo > 0 && p.Activity.PendingUpTo <= (p.Progress?.CoveredTo ?? 0)).Select(p => p.Activity).ToList();
        if (covered.Count == 0)
        {
            return;
        }

        var sql = ClearCoveredMarksSql(store.Options.Schema.For<ConversationActivity>(), store.Options.Schema.For<SummaryProgress>());
        await using var connection = store.Storage.Database.CreateConnection();
        await connection.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(sql, connection);
        command.Parameters.Add(new NpgsqlParameter("tenants", NpgsqlDbType.Array | NpgsqlDbType.Varchar) { Value = covered.Select(a => a.TenantId!).ToArray() });
        command.Parameters.Add(new NpgsqlParameter("ids", NpgsqlDbType.Array | NpgsqlDbType.Uuid) { Value = covered.Select(a => a.Id).ToArray() });
        command.Parameters.Add(new NpgsqlParameter("marks", NpgsqlDbType.Array | NpgsqlDbType.Bigint) { Value = covered.Select(a => a.PendingUpTo).ToArray() });
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>Of the conversations in <paramref name="keys"/>: their summary progress, and which still have an activity row.</summary>
    private async Task<(Dictionary<(string, Guid), SummaryProgress> Progress, HashSet<(string, Guid)> Existing)> ReadInFlightAsync(
        IReadOnlyCollection<(string Tenant, Guid Id)> keys, CancellationToken cancellationToken)
    {
        var sql = SettleSql(store.Options.Schema.For<ConversationActivity>(), store.Options.Schema.For<SummaryProgress>());
        await using var connection = store.Storage.Database.CreateConnection();
        await connection.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(sql, connection);
        command.Parameters.Add(new NpgsqlParameter("tenants", NpgsqlDbType.Array | NpgsqlDbType.Varchar) { Value = keys.Select(k => k.Tenant).ToArray() });
        command.Parameters.Add(new NpgsqlParameter("ids", NpgsqlDbType.Array | NpgsqlDbType.Uuid) { Value = keys.Select(k => k.Id).ToArray() });
        var serializer = store.Options.Serializer();
        var progress = new Dictionary<(string, Guid), SummaryProgress>();
        var existing = new HashSet<(string, Guid)>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var key = (reader.GetString(0), reader.GetGuid(1));
            if (reader.GetBoolean(2))
            {
                existing.Add(key);
            }

            if (!await reader.IsDBNullAsync(3, cancellationToken))
            {
                var p = await serializer.FromJsonAsync<SummaryProgress>(reader, 3, cancellationToken);
                p.TenantId = key.Item1;
                progress[key] = p;
            }
        }

        return (progress, existing);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Summary sweep skipped: another node is sweeping")]
    private static partial void LogBusy(ILogger logger);

    [LoggerMessage(Level = LogLevel.Information, Message = "Summary sweep {SweepId} started (resummarize: {Resummarize}, tenants: {Tenant})")]
    private static partial void LogStarted(ILogger logger, Guid sweepId, bool resummarize, string tenant);

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "Summary sweep {SweepId} found {Count} conversations whose appends Summaries had not followed (their notices were lost) and brought their activity up to date")]
    private static partial void LogCaughtUp(ILogger logger, Guid sweepId, long count);

    [LoggerMessage(Level = LogLevel.Information,
        Message = "Summary sweep {SweepId} finished: {Examined} conversations examined, {Queued} queued, {Finished} done, {Unfinished} not done in time, in {DurationMs} ms")]
    private static partial void LogFinished(ILogger logger, Guid sweepId, long examined, long queued, long finished, long unfinished, long durationMs);
}
