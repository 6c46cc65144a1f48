using System.Diagnostics;
using System.Runtime.CompilerServices;
using JasperFx;
using Marten;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Contracts;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Summarizers;
using Wolverine;

namespace ModularChat.Summaries.Jobs;

/// <summary>
/// Runs one summarization job: reads the previous summary and only the messages after its coverage, one chunk at a time,
/// merges chunk by chunk, and appends the revision to the summary stream in the job's transaction. The stream's expected
/// version makes a second writer of the same revision fail (and retry into a no-op), so retries, duplicates and several
/// nodes never produce two revisions for the same range.
/// </summary>
public sealed partial class SummaryWriter(
    IConversationMessages conversations,
    SummarizerSelector summarizers,
    SummarySettingsResolver settingsResolver,
    SummariesMetrics metrics,
    TimeProvider clock,
    AppendBursts bursts,
    TenantJobShares shares,
    IOptions<SummariesOptions> options,
    NodeStopping nodeStopping,
    ILogger<SummaryWriter> logger)
{
    /// <summary>How long the claim a rebuild takes only to mark itself done holds: until its job has committed (milliseconds).</summary>
    private static readonly TimeSpan MarkClaimHold = TimeSpan.FromSeconds(30);

    /// <summary>
    /// When a job that came to a stopping node is due again: about one poll of Wolverine's scheduled jobs (5 s), so another
    /// node takes it soon, and the stopping node, should its poller take it back meanwhile, puts it off again rarely.
    /// </summary>
    internal static readonly TimeSpan StoppingHandOver = TimeSpan.FromSeconds(5);

    public async Task<OutgoingMessages> RunAsync(SummarizeConversation job, IDocumentSession session, Envelope envelope, CancellationToken cancellationToken)
    {
        // A mark of an earlier life of the job (a replayed dead letter's) says nothing about this attempt.
        envelope.Headers.Remove(HandlerFailureLog.Header);
        try
        {
            return await AttemptAsync(job, session, envelope, cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested || !nodeStopping.Begun)
        {
            // The one entry of the failed attempt, whatever failed in it: Wolverine's own for it stay below Warning
            // (HandlerFailureLog, and the job's FailureLogLevel). The last one, which dead-letters the job, is the error.
            var failure = TimedOut(e, cancellationToken) ?? e;
            Report(envelope, failure, session.TenantId, job.ConversationId,
                envelope.Attempts > RetryCount() ? SummariesMetrics.DeadLetter : SummariesMetrics.Retry);
            if (ReferenceEquals(failure, e))
            {
                throw;
            }

            throw failure;
        }
    }

    /// <summary>
    /// Logs and counts, as <see cref="RunAsync"/> does the failures it sees, an attempt that failed after the writer returned:
    /// at the commit of the job's transaction (the revision, the progress and the queued messages, stored by Wolverine once
    /// the handler is done), e.g. the database going away or a lost race with another writer of the same revision. Called by
    /// the job's retry policy (SummariesMessaging) before Wolverine's own step, with that step's <paramref name="outcome"/>.
    /// </summary>
    internal void FailedAtCommit(Envelope envelope, Exception exception, string outcome)
        => Report(envelope, exception, envelope.TenantId ?? StorageConstants.DefaultTenantId,
            (envelope.Message as SummarizeConversation)?.ConversationId ?? Guid.Empty, outcome);

    /// <summary>
    /// The one entry and count of a failed attempt, by its <paramref name="outcome"/>: a lost race at Information, a retry
    /// at Warning, the last attempt (the job dead-lettered) at Error. Marks the envelope so Wolverine's own entry for the
    /// same failure stays below Warning (HandlerFailureLog).
    /// </summary>
    private void Report(Envelope envelope, Exception failure, string tenant, Guid conversationId, string outcome)
    {
        metrics.Failed(settingsResolver.For(tenant).Variant, failure.GetType().Name, outcome);
        switch (outcome)
        {
            case SummariesMetrics.Conflict:
                LogLostRace(logger, failure, conversationId, tenant, envelope.Attempts);
                break;
            case SummariesMetrics.DeadLetter:
                LogDeadLettered(logger, failure, conversationId, tenant, envelope.Attempts, failure.Message);
                break;
            default:
                LogFailed(logger, failure, conversationId, tenant, envelope.Attempts);
                break;
        }

        HandlerFailureLog.MarkLogged(envelope);
    }

    /// <summary>
    /// The attempt's failure when Wolverine cut it at <see cref="SummariesOptions.JobTimeout"/> (the handler's token
    /// cancelled while the node is not stopping), named so: it was a bare "A task was canceled." that the writer neither
    /// logged nor counted (Wolverine's own entry for it is at Debug), so an attempt, and a job, that ran out of time failed
    /// silently, and the dead-letter store said only that a task was cancelled. Null for any other failure.
    /// </summary>
    private TimeoutException? TimedOut(Exception e, CancellationToken cancellationToken)
        => e is OperationCanceledException && cancellationToken.IsCancellationRequested
            ? new TimeoutException($"The attempt ran past Summaries:JobTimeout ({options.Value.JobTimeout}) and was cancelled; " +
                                   "what it had not stored is read again by the next attempt.", e)
            : null;

    private async Task<OutgoingMessages> AttemptAsync(SummarizeConversation job, IDocumentSession session, Envelope envelope, CancellationToken cancellationToken)
    {
        var outgoing = new OutgoingMessages();
        var tenant = session.TenantId;
        var id = job.ConversationId;
        var settings = settingsResolver.For(tenant);
        using var span = ModularChatTelemetry.ActivitySource.StartActivity("summaries.summarize");
        span?.SetTag("modularchat.conversation.id", id);
        span?.SetTag("modularchat.summary.reason", job.Reason);
        span?.SetTag("modularchat.summary.variant", settings.Variant);

        // The node is stopping (NodeStopping): jobs that run finish; one not started yet is stored again as scheduled, owned by
        // no node, for another node (or this one's next start) to take, before it reads anything.
        if (nodeStopping.Begun)
        {
            var at = clock.GetUtcNow() + StoppingHandOver;
            outgoing.Add(job.ScheduledAt(at));
            KeepPending(session, id, job.UpToSequence, at);
            metrics.Deferred(settings.Variant, "node_stopping");
            LogStoppingDeferred(logger, id, tenant);
            return outgoing;
        }

        // A bulk import is on (ADR 0008): an automatic summary can wait, at most Background:MaxYieldLag after what made it
        // due. Decided before any read: during a long import each due conversation's job comes back every recheck.
        if (IsAutomatic(job.Reason) && job.TriggeredAt is { } triggeredAt && bursts.ShouldDefer(triggeredAt))
        {
            var recheck = options.Value.BurstRecheckInterval;
            outgoing.Add(job.ScheduledAt(clock.GetUtcNow() + recheck));
            bursts.RecordDeferral(recheck, "summaries");
            metrics.Deferred(settings.Variant, "burst");
            LogDeferred(logger, id, tenant);
            return outgoing;
        }

        // The tenant runs its share of this node's job slots (a slow model, an import): this job, whatever its kind, leaves
        // the slot to other tenants' jobs and looks again later, before it reads anything. Counted until the job ends, however.
        using var turn = shares.Enter(tenant, id, job.DeferredSince);
        if (!turn.Started)
        {
            var at = clock.GetUtcNow() + turn.Delay;
            outgoing.Add((job with { DeferredSince = turn.Since }).ScheduledAt(at));
            KeepPending(session, id, job.UpToSequence, at);
            metrics.Deferred(settings.Variant, "tenant_share");
            LogShareDeferred(logger, id, tenant, turn.Running, shares.Share, (long)turn.Delay.TotalMilliseconds, turn.Waiting);
            return outgoing;
        }

        // Its place in the line served: what it queues (a continuation, a later look) starts a line of its own.
        job = job with { DeferredSince = null };

        var reads = session.CreateBatchQuery();
        var progressRead = reads.Load<SummaryProgress>(id);
        var currentRead = reads.Load<SummaryView>(id);
        await reads.Execute(cancellationToken);
        var progress = await progressRead;
        var coveredTo = progress?.CoveredTo ?? 0;
        var rebuild = job.RebuildId is not null;
        if (rebuild ? progress?.RebuildId == job.RebuildId : job.UpToSequence <= coveredTo)
        {
            LogAlreadyCovered(logger, id, tenant, job.UpToSequence, coveredTo);
            return outgoing;
        }

        var conversation = await conversations.FindAsync(tenant, id, cancellationToken);
        if (conversation is null)
        {
            // What the module still holds for it goes too: a notice's batch that read the activity before the deletion and
            // stored it after brings the row back, and every sweep would queue this job for it again and wait for it.
            LogConversationGone(logger, id, tenant);
            outgoing.Add(new VerifySummarizedConversation(id));
            return outgoing;
        }

        var reason = job.Reason;
        if (IsAutomatic(job.Reason) && !job.Continues)
        {
            // Automatic jobs ask the strategy again, on the conversation as it is now: a job queued twice, or overtaken by
            // another, does nothing; one that comes too soon after the last revision waits for the minimum interval.
            var state = new SummaryState(conversation.MessageCount, coveredTo, Math.Max(0, conversation.TotalTokens - (progress?.CoveredTokens ?? 0)), progress?.RevisedAt);
            var decision = SummaryStrategy.Decide(state, settings.Strategy, clock.GetUtcNow());
            if (!decision.Due)
            {
                LogNotDue(logger, id, tenant, conversation.MessageCount, coveredTo);
                ReleasePending(session, id, job.UpToSequence, coveredTo);
                return outgoing;
            }

            if (decision.NotBefore is { } earliest)
            {
                outgoing.Add(job.ScheduledAt(earliest));
                return outgoing;
            }

            reason = decision.Reason!;
        }

        var current = await currentRead;
        // A rebuild's continuation goes on from the revision its first part stored, as an incremental revision does.
        var restart = rebuild && !job.Continues;
        var (from, text, restated, basedOn, baseCoversTo) = await BaseAsync(session, conversation, current, coveredTo, restart, cancellationToken);
        if (conversation.MessageCount <= from && !restated)
        {
            if (rebuild && progress is not null)
            {
                // Retention deleted everything up to the last message: the summary that covered them is all that is left and
                // stays as it is; the rebuild is done with it (a sweep waits for this mark). Written, like a revision, only by
                // the job that holds the claim on the next revision: a job writing that revision meanwhile (messages came)
                // would otherwise have its progress overwritten with the one read before it, and every later revision of
                // the conversation would fail on the stream's version. Held until this job has committed, not longer.
                if (!await TryClaimAsync(session, id, progress.Revision + 1, envelope.Id, cancellationToken, MarkClaimHold))
                {
                    outgoing.Add(job.ScheduledAt(clock.GetUtcNow() + options.Value.ClaimRecheckInterval));
                    LogClaimedElsewhere(logger, id, tenant, progress.Revision + 1);
                    return outgoing;
                }

                session.Store(new SummaryProgress
                {
                    Id = id,
                    CoveredTo = progress.CoveredTo,
                    CoveredTokens = progress.CoveredTo == conversation.MessageCount ? conversation.TotalTokens : progress.CoveredTokens,
                    Revision = progress.Revision,
                    RevisedAt = progress.RevisedAt,
                    RebuildId = job.RebuildId,
                });
                LogNothingToReread(logger, id, tenant, from);
            }

            return outgoing;
        }

        // The model is called only by the job that holds the claim on this revision: another job for it (a duplicate, often
        // queued by another node that saw the same appends) looks again later, by when it usually finds it written.
        var revision = (progress?.Revision ?? 0) + 1;
        if (!await TryClaimAsync(session, id, revision, envelope.Id, cancellationToken))
        {
            outgoing.Add(job.ScheduledAt(clock.GetUtcNow() + options.Value.ClaimRecheckInterval));
            LogClaimedElsewhere(logger, id, tenant, revision);
            return outgoing;
        }

        IConversationSummarizer summarizer = null!;
        var started = Stopwatch.GetTimestamp();
        long covered = from, read = 0, messageTokens = 0;
        long? readFrom = null;
        int inputTokens = 0, outputTokens = 0, chunks = 0;
        string? stoppedBy = null;
        try
        {
            // In the attempt: a tenant's provider that cannot be used (its stored key no longer decrypts) fails the job like
            // its model would, logged, counted and with the claim released, not dead-lettered without a word.
            summarizer = await summarizers.ForAsync(tenant, settings, cancellationToken);
            span?.SetTag("modularchat.summary.summarizer", summarizer.Name);
            span?.SetTag("modularchat.summary.model", summarizer.Model);
            await foreach (var chunk in ReadMessagesAsync(tenant, id, from, conversation.MessageCount, settings.ChunkSize, cancellationToken))
            {
                readFrom ??= chunk[0].Sequence;
                // After deletions the base text may stand for some of the kept messages read again (see BaseAsync).
                var repeatedThrough = chunk[0].Sequence <= baseCoversTo ? Math.Min(baseCoversTo, chunk[^1].Sequence) : 0;
                var merged = await summarizer.MergeAsync(
                    new SummaryMergeInput(text, Math.Max(covered, repeatedThrough), chunk, settings, repeatedThrough), cancellationToken);
                text = merged.Text;
                inputTokens += merged.InputTokens;
                outputTokens += merged.OutputTokens;
                messageTokens += chunk.Sum(m => (long)m.TokenCount);
                read += chunk.Count;
                covered = chunk[^1].Sequence;
                chunks++;
                if (covered < conversation.MessageCount && StopsHere(chunks, started) is { } cause)
                {
                    stoppedBy = cause; // the revision so far is stored below and the rest queued as a job of its own
                    break;
                }
            }

            if (read > 0 && string.IsNullOrWhiteSpace(text))
            {
                // A summary stands for the messages it covers: retention may remove them once it is stored. An empty one would
                // leave nothing in their place, so the job fails (retries, then the dead-letter store) rather than store it.
                throw new InvalidOperationException(
                    $"The {summarizer.Name} summarizer ({summarizer.Model}) wrote an empty summary for messages {from + 1}-{covered}: not stored.");
            }
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            span?.SetStatus(ActivityStatusCode.Error, e.Message);
            // Logged and counted by RunAsync, with the failures of the rest of the attempt. Until this job's retry, another
            // job for the revision may try the model (as a duplicate did before claims).
            await ReleaseClaimAsync(session, id, envelope.Id);
            throw;
        }

        if ((covered <= from && !restated) || text is null)
        {
            return outgoing; // the messages went away while we read (the conversation is being deleted)
        }

        var duration = Stopwatch.GetElapsedTime(started);
        var revisedAt = clock.GetUtcNow();
        var revised = new SummaryRevised(id, revision, text, 1, covered, reason, summarizer.Name, summarizer.Model,
            summarizer.PromptVersion, settings.Variant, inputTokens, outputTokens, duration, revisedAt, basedOn, readFrom);
        var stream = SummaryStreams.For(id);
        if (revision == 1)
        {
            session.Events.StartStream(stream, revised);
        }
        else
        {
            session.Events.Append(stream, revision, revised);
        }

        // Through the last message, the revision covers every token the conversation ever had (archived and deleted messages
        // included, which a rebuild does not all re-read); the token threshold compares the conversation's total with this.
        var coveredTokens = covered == conversation.MessageCount
            ? conversation.TotalTokens
            : (restart ? 0 : progress?.CoveredTokens ?? 0) + messageTokens;
        session.Store(new SummaryProgress
        {
            Id = id,
            CoveredTo = covered,
            CoveredTokens = coveredTokens,
            Revision = revision,
            RevisedAt = revisedAt,
            // A rebuild is done (a sweep waits for this mark) when its last part is stored.
            RebuildId = stoppedBy is not null ? progress?.RebuildId : job.RebuildId ?? progress?.RebuildId,
        });
        ClearCoveredPending(session, id, covered);

        var lag = job.TriggeredAt is { } triggered ? revisedAt - triggered : (TimeSpan?)null;
        metrics.Generated(settings.Variant, summarizer.Name, summarizer.Model, reason, duration, lag);
        span?.SetTag("modularchat.summary.revision", revision);
        LogRevised(logger, id, tenant, revision, covered, read, text.Length, outputTokens, summarizer.Name, summarizer.Model,
            (long)duration.TotalMilliseconds, reason, settings.Variant);

        outgoing.Add(new VerifySummarizedConversation(id));
        if (stoppedBy is not null)
        {
            metrics.StoppedPartWay(settings.Variant, stoppedBy);
            LogContinued(logger, id, tenant, revision, covered, conversation.MessageCount, chunks, stoppedBy);
            outgoing.Add(job with { UpToSequence = conversation.MessageCount, Reason = reason, Continues = true });
        }
        else if (await FollowUpAsync(tenant, id, covered, coveredTokens, revisedAt, settings, cancellationToken) is { } next)
        {
            outgoing.Add(next);
        }

        return outgoing;
    }

    /// <summary>
    /// Whether a job that has folded <paramref name="chunks"/> chunks, and has more to read, stops here, and why: at
    /// <see cref="SummariesOptions.MaxChunksPerJob"/> (<c>max_chunks</c>: other conversations' jobs get their turn), or once
    /// half of <see cref="SummariesOptions.JobTimeout"/> has gone (<c>job_time</c>: the next chunk's model call could run it
    /// past the timeout, which would throw away every merge made so far and start over). Null: it goes on.
    /// </summary>
    private string? StopsHere(int chunks, long started)
    {
        var o = options.Value;
        return o.MaxChunksPerJob > 0 && chunks >= o.MaxChunksPerJob ? "max_chunks"
            : Stopwatch.GetElapsedTime(started) >= o.JobTimeout / 2 ? "job_time"
            : null;
    }

    /// <summary>
    /// Takes the claim on revision <paramref name="revision"/> of the conversation for job <paramref name="jobId"/>, committed
    /// at once (before the model call): false when another job holds a live claim on it or took it first, or a later revision
    /// is claimed.
    /// </summary>
    /// <param name="holdFor">How long the claim holds (default: <see cref="SummariesOptions.JobTimeout"/>).</param>
    private async Task<bool> TryClaimAsync(
        IDocumentSession jobSession, Guid id, int revision, Guid jobId, CancellationToken cancellationToken, TimeSpan? holdFor = null)
    {
        await using var session = jobSession.DocumentStore.LightweightSession(jobSession.TenantId);
        var claim = await session.LoadAsync<SummaryClaim>(id, cancellationToken);
        var now = clock.GetUtcNow();
        // A claim on a later revision means this one is written already (this job read the progress before it was).
        if (claim is not null && (claim.Revision > revision || (claim.Revision == revision && claim.JobId != jobId && claim.Until > now)))
        {
            return false;
        }

        var taken = claim ?? new SummaryClaim { Id = id };
        (taken.Revision, taken.JobId, taken.Until) = (revision, jobId, now + (holdFor ?? options.Value.JobTimeout));
        if (claim is null)
        {
            session.Insert(taken); // another job's insert of it first makes this one conflict
        }
        else
        {
            session.Update(taken); // the loaded version is the expected one: a job that took it meanwhile makes this one conflict
        }

        try
        {
            await session.SaveChangesAsync(cancellationToken);
            return true;
        }
        catch (Exception e) when (e is ConcurrencyException or DocumentAlreadyExistsException)
        {
            return false;
        }
    }

    /// <summary>Gives up this job's claim (its attempt failed); best effort: a claim left behind lapses after the job's timeout.</summary>
    private async Task ReleaseClaimAsync(IDocumentSession jobSession, Guid id, Guid jobId)
    {
        try
        {
            await using var session = jobSession.DocumentStore.LightweightSession(jobSession.TenantId);
            session.DeleteWhere<SummaryClaim>(c => c.Id == id && c.JobId == jobId);
            await session.SaveChangesAsync(CancellationToken.None);
        }
        catch (Exception e)
        {
            LogClaimNotReleased(logger, e, id, jobSession.TenantId);
        }
    }

    /// <summary>
    /// Where a revision starts: an incremental one (or a rebuild's continuation) after the current summary's coverage,
    /// with its text. A rebuild from nothing when every message can be read again (hot or archived); after the last message
    /// retention deleted otherwise, from the summary that covers that range (retention removes only what a stored revision
    /// covers), the only record of it: the messages after it are folded into it as an incremental revision's are.
    /// </summary>
    /// <remarks>
    /// Retention decides on the revision it read: a rebuild that stored a revision covering less (it stopped part way, or
    /// started from nothing before retention deleted) while retention deleted past it left the current summary short of
    /// messages nobody can read any more, and every later job failed on them. Such a job goes on from the newest revision
    /// of the history that covers them instead.
    /// </remarks>
    private async Task<(long From, string? Text, bool Restated, int? BasedOn, long TextCoversTo)> BaseAsync(
        IDocumentSession session, ConversationInfo conversation, SummaryView? current, long coveredTo, bool restart, CancellationToken cancellationToken)
    {
        var deletedThrough = conversation.Retained.Where(r => r.Action == RetentionAction.Deleted).Select(r => r.ToSequence).DefaultIfEmpty(0).Max();
        if (deletedThrough <= (restart ? 0 : coveredTo))
        {
            return restart ? (0, null, false, null, 0) : (coveredTo, current?.Text, false, current?.Revision, coveredTo);
        }

        // Read again from the first kept message on top of a text that may also stand for some of the kept ones (KeepLast,
        // or messages that came after the summary retention decided on): the merge is told which (TextCoversTo).
        if (current is not null && current.ToSequence >= deletedThrough)
        {
            return (deletedThrough, current.Text, false, current.Revision, current.ToSequence);
        }

        var covering = await session.Query<SummaryRevisionView>()
            .Where(r => r.ConversationId == conversation.ConversationId && r.Summary.ToSequence >= deletedThrough)
            .OrderByDescending(r => r.Revision)
            .FirstOrDefaultAsync(cancellationToken);
        if (covering is null)
        {
            return restart ? (0, null, false, null, 0) : (coveredTo, current?.Text, false, current?.Revision, coveredTo); // nothing covers them: the read fails on the gap, as before
        }

        // Stored again even with nothing after it to read: the current summary must stand for them again.
        LogShortCoverage(logger, conversation.ConversationId, session.TenantId, current?.ToSequence ?? 0, deletedThrough, covering.Revision);
        return (deletedThrough, covering.Summary.Text, true, covering.Revision, covering.Summary.ToSequence);
    }

    /// <summary>
    /// Messages after <paramref name="after"/> through <paramref name="upTo"/> in sequence order, in chunks, the archived ones
    /// (retention moved them out of the hot table) merged in where the hot ones leave a gap. Read hot first: retention only
    /// moves messages from hot to archive, so a message missing from the hot read is in the archive read after it. A gap
    /// neither fills was deleted meanwhile: the job fails and its retry starts from the summary that covered it.
    /// </summary>
    private async IAsyncEnumerable<IReadOnlyList<ConversationMessage>> ReadMessagesAsync(
        string tenant, Guid id, long after, long upTo, int chunkSize, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var next = after + 1;
        await foreach (var hot in conversations.ReadChunksAsync(tenant, id, after, upTo, chunkSize, cancellationToken))
        {
            if (hot[0].Sequence > next)
            {
                await foreach (var archived in conversations.ReadArchivedChunksAsync(tenant, id, next - 1, hot[0].Sequence - 1, chunkSize, cancellationToken))
                {
                    next = archived[^1].Sequence + 1;
                    yield return archived;
                }

                if (hot[0].Sequence > next)
                {
                    throw new InvalidOperationException(
                        $"Messages {next}-{hot[0].Sequence - 1} of conversation {id} were deleted while the summary was written: it will start again from the summary that covers them.");
                }
            }

            next = hot[^1].Sequence + 1;
            yield return hot;
        }

        if (next <= upTo)
        {
            // No hot message left after these (all archived, or archived while read).
            await foreach (var archived in conversations.ReadArchivedChunksAsync(tenant, id, next - 1, upTo, chunkSize, cancellationToken))
            {
                next = archived[^1].Sequence + 1;
                yield return archived;
            }
        }

        if (next <= upTo && await conversations.FindAsync(tenant, id, cancellationToken) is not null)
        {
            // The last ones were deleted while read: a revision stored now would claim less than the one they were deleted
            // under. Its retry starts from that one (the conversation being deleted instead ends the job quietly).
            throw new InvalidOperationException(
                $"Messages {next}-{upTo} of conversation {id} were deleted while the summary was written: it will start again from the summary that covers them.");
        }
    }

    /// <summary>Messages that arrived while this revision was written may already make the next one due.</summary>
    private async Task<object?> FollowUpAsync(
        string tenant, Guid id, long covered, long coveredTokens, DateTimeOffset revisedAt, SummarySettings settings, CancellationToken cancellationToken)
    {
        var now = await conversations.FindAsync(tenant, id, cancellationToken);
        if (now is null || now.MessageCount <= covered)
        {
            return null;
        }

        var state = new SummaryState(now.MessageCount, covered, Math.Max(0, now.TotalTokens - coveredTokens), revisedAt);
        var decision = SummaryStrategy.Decide(state, settings.Strategy, revisedAt);
        if (!decision.Due)
        {
            return null;
        }

        var job = new SummarizeConversation(id, now.MessageCount, decision.Reason!, now.LastActivityAt);
        return decision.NotBefore is { } at ? job.ScheduledAt(at) : job;
    }

    /// <summary>The set clause of an update of the activity table that clears a pending mark (0: no job pending), in its column and its JSON.</summary>
    internal const string ClearPendingMark = "set pending_up_to = 0, data = jsonb_set(data, '{PendingUpTo}', '0')";

    /// <summary>
    /// Clears the conversation's pending mark (0: no job pending) when it is still the one this job was queued with. A notice
    /// that came while the previous job ran (an assistant's answer right after the message that reached a milestone)
    /// queued this one with its own mark; finding nothing due, it left the mark above the coverage until the next
    /// revision, and the backlog gauge counted the conversation as waiting for a summary all that time. A mark a later
    /// notice set (another job) is left alone; so is the document's version: a notice's batch that read the row before
    /// stores its own view.
    /// </summary>
    private static void ReleasePending(IDocumentSession session, Guid id, long jobMark, long coveredTo)
    {
        var table = session.DocumentStore.Options.Schema.For<ConversationActivity>();
        session.QueueSqlCommand(
            $"update {table} {ClearPendingMark} where tenant_id = ? and id = ? and pending_up_to = ? and pending_up_to > ?",
            session.TenantId, id, jobMark, coveredTo);
    }

    /// <summary>
    /// Clears the conversation's pending mark (0: no job pending) once the revision being stored covers it. A mark at or
    /// below the coverage counts for nothing (every reader compares it with the coverage); at 0 it is also out of the
    /// range that the backlog count reads from its index (<see cref="Features.Sweep.SummaryBacklogMonitor"/>). Before
    /// 2026-12-07 covered marks stayed, so the count read every conversation's activity and progress every
    /// <c>Summaries:BacklogRefreshInterval</c> on every node. A mark above the coverage (a later job's) is left alone; as
    /// <see cref="ReleasePending"/>, a notice's batch that read the row before may store its view again, which is at or
    /// below the coverage too.
    /// </summary>
    private static void ClearCoveredPending(IDocumentSession session, Guid id, long covered)
    {
        var table = session.DocumentStore.Options.Schema.For<ConversationActivity>();
        session.QueueSqlCommand(
            $"update {table} {ClearPendingMark} where tenant_id = ? and id = ? and pending_up_to > 0 and pending_up_to <= ?",
            session.TenantId, id, covered);
    }

    /// <summary>
    /// Moves the conversation's pending mark's start time to <paramref name="at"/>, when the mark is still the one this job was
    /// queued with: the job is alive, only put off. A sweep takes a mark older than <see cref="SummariesOptions.PendingJobTimeout"/>
    /// for a lost job and queues another (a tenant's share can put a job off for longer than that), and appends meanwhile
    /// queue no second job for it (it reads every message there is when it runs), as for a job scheduled for later.
    /// </summary>
    private static void KeepPending(IDocumentSession session, Guid id, long jobMark, DateTimeOffset at)
    {
        var table = session.DocumentStore.Options.Schema.For<ConversationActivity>();
        session.QueueSqlCommand(
            $"update {table} set data = jsonb_set(data, '{{PendingAt}}', to_jsonb(?::text)) where tenant_id = ? and id = ? and pending_up_to = ?",
            at.ToString("O", System.Globalization.CultureInfo.InvariantCulture), session.TenantId, id, jobMark);
    }

    internal static bool IsAutomatic(string reason) => reason is not (SummaryStrategy.Manual or SummaryStrategy.Resummarize);

    private int RetryCount() => SummariesOptions.TryParseDelays(options.Value.RetryDelays, out var delays) ? delays.Length : 0;

    [LoggerMessage(Level = LogLevel.Information,
        Message = "Summarized conversation {ConversationId} of tenant {TenantId}: revision {Revision} covers messages 1-{ToSequence} ({MessageCount} new), " +
                  "{SummaryLength} characters / {OutputTokens} tokens by {Summarizer} ({Model}) in {DurationMs} ms, reason {Reason}, variant {Variant}")]
    private static partial void LogRevised(ILogger logger, Guid conversationId, string tenantId, int revision, long toSequence, long messageCount,
        int summaryLength, int outputTokens, string summarizer, string model, long durationMs, string reason, string variant);

    [LoggerMessage(Level = LogLevel.Information,
        Message = "Summary of conversation {ConversationId} of tenant {TenantId} stopped after {Chunks} chunks ({StoppedBy}): revision {Revision} covers " +
                  "messages 1-{ToSequence} of {MessageCount}, the rest is queued")]
    private static partial void LogContinued(
        ILogger logger, Guid conversationId, string tenantId, int revision, long toSequence, long messageCount, int chunks, string stoppedBy);

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "Summary of conversation {ConversationId} of tenant {TenantId} covers messages up to {CoveredTo}, but retention deleted up to {DeletedThrough} (a rebuild stored a shorter revision meanwhile): going on from revision {Revision}, which covers them")]
    private static partial void LogShortCoverage(ILogger logger, Guid conversationId, string tenantId, long coveredTo, long deletedThrough, int revision);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Summary of conversation {ConversationId} of tenant {TenantId} already covers {CoveredTo} (job asked for {UpToSequence}): nothing to do")]
    private static partial void LogAlreadyCovered(ILogger logger, Guid conversationId, string tenantId, long upToSequence, long coveredTo);

    [LoggerMessage(Level = LogLevel.Debug, Message = "No summary due for conversation {ConversationId} of tenant {TenantId} ({MessageCount} messages, {CoveredTo} covered): nothing to do")]
    private static partial void LogNotDue(ILogger logger, Guid conversationId, string tenantId, long messageCount, long coveredTo);

    [LoggerMessage(Level = LogLevel.Debug,
        Message = "Revision {Revision} of the summary of conversation {ConversationId} of tenant {TenantId} is being written by another job: looking again later")]
    private static partial void LogClaimedElsewhere(ILogger logger, Guid conversationId, string tenantId, int revision);

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "The claim on the summary of conversation {ConversationId} of tenant {TenantId} could not be released: it lapses after Summaries:JobTimeout")]
    private static partial void LogClaimNotReleased(ILogger logger, Exception exception, Guid conversationId, string tenantId);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Summary of conversation {ConversationId} of tenant {TenantId} put off: this node is stopping, another node or its next start takes it")]
    private static partial void LogStoppingDeferred(ILogger logger, Guid conversationId, string tenantId);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Summary of conversation {ConversationId} of tenant {TenantId} put off: a burst of appends is on")]
    private static partial void LogDeferred(ILogger logger, Guid conversationId, string tenantId);

    [LoggerMessage(Level = LogLevel.Debug,
        Message = "Summary of conversation {ConversationId} of tenant {TenantId} put off for {DelayMs} ms: its tenant runs {Running} jobs on this node, " +
                  "its share is {Share} ({Waiting} put off)")]
    private static partial void LogShareDeferred(ILogger logger, Guid conversationId, string tenantId, int running, int share, long delayMs, int waiting);

    [LoggerMessage(Level = LogLevel.Information,
        Message = "Rebuild of the summary of conversation {ConversationId} of tenant {TenantId}: retention deleted messages 1-{DeletedThrough}, nothing is left to read again; the current summary stays")]
    private static partial void LogNothingToReread(ILogger logger, Guid conversationId, string tenantId, long deletedThrough);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Conversation {ConversationId} of tenant {TenantId} no longer exists: nothing to summarize")]
    private static partial void LogConversationGone(ILogger logger, Guid conversationId, string tenantId);

    [LoggerMessage(Level = LogLevel.Information,
        Message = "Summarizing conversation {ConversationId} of tenant {TenantId} lost a race at the commit on attempt {Attempt} (another job stored the revision first): retried at once")]
    private static partial void LogLostRace(ILogger logger, Exception exception, Guid conversationId, string tenantId, int attempt);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Summarizing conversation {ConversationId} of tenant {TenantId} failed on attempt {Attempt}: will retry")]
    private static partial void LogFailed(ILogger logger, Exception exception, Guid conversationId, string tenantId, int attempt);

    [LoggerMessage(Level = LogLevel.Error,
        Message = "Summarizing conversation {ConversationId} of tenant {TenantId} failed on attempt {Attempt}, the last: dead-lettered (an admin can replay it): {Error}")]
    private static partial void LogDeadLettered(ILogger logger, Exception exception, Guid conversationId, string tenantId, int attempt, string error);
}
