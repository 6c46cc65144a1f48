using JasperFx.Events;
using JasperFx.Events.Protected;
using Marten;
using Marten.Events;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Caching;
using ModularChat.Conversations.Contracts;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Conversations.Domain;
using ModularChat.Conversations.Features.GetContext;
using ModularChat.Summaries.Contracts;

namespace ModularChat.Conversations.Features.Retention;

/// <summary>
/// Applies a tenant's retention policy to one conversation, with Marten's own means: the covered messages'
/// events are compacted away (a <c>Compacted&lt;Conversation&gt;</c> snapshot replaces them in the stream),
/// their hot documents are hard-deleted, archived ones are copied to <see cref="ArchivedMessage"/> by the
/// compaction's archiver first, and a <see cref="RetentionApplied"/> event records the range. All in one
/// transaction, so nothing is half done.
/// </summary>
/// <remarks>
/// The stream's lock is held as briefly as that allows, because appends to the conversation wait for it, and with group
/// commit (ADR 0005) so do the other appends of the tenant on the node. Everything that reads is done before the lock
/// (<see cref="PlanAsync"/>): the step is decided on the committed conversation, and the compaction reads and folds the
/// step's events and queues its writes. That is safe because those events cannot change: a message event keeps its
/// version and content, and only retention compacts, always moving <see cref="Conversation.RetainedThrough"/>. Under the
/// lock (<see cref="CommitAsync"/>) one round trip reads the conversation; if its retained range is still the one the
/// plan saw, the queued writes are committed with <see cref="RetentionApplied"/> and no event is read under the lock.
/// Otherwise another retention committed in between (or the conversation was deleted): the plan is dropped and a fresh
/// one is asked for. Appends that arrived in between only make the step smaller than it could now be: it is still within
/// the policy, and the rest is asked for at once (<see cref="RetentionOutcome.MoreDue"/>).
/// </remarks>
public sealed partial class RetentionExecutor(
    IServiceProvider services,
    CacheGenerations generations,
    IOptionsMonitor<RetentionOptions> options,
    TimeProvider clock,
    ConversationsMetrics metrics,
    ILogger<RetentionExecutor> logger)
{
    /// <summary>Plans and commits one retention step of the conversation, if the policy and its summary allow one.</summary>
    /// <param name="session">A session with nothing pending: a plan that turns out stale is dropped with everything queued on it.</param>
    /// <param name="queueNextRun">
    /// Called when another step is due (<see cref="RetentionOutcome.MoreDue"/>), before anything is committed: what it
    /// queues on the session's outbox is committed with the step.
    /// </param>
    /// <param name="waitingSince">
    /// Since when this run's step has been waiting for the asynchronous projections (null: it has not): the step waits for
    /// them at most <see cref="RetentionOptions.MaxProjectionWait"/> after that (<see cref="RetentionOutcome.WaitsForProjections"/>).
    /// </param>
    public async Task<RetentionOutcome> ApplyAsync(
        IDocumentSession session, Guid conversationId, CancellationToken cancellationToken, Func<ValueTask>? queueNextRun = null,
        DateTimeOffset? waitingSince = null)
    {
        var plan = await PlanAsync(session, conversationId, cancellationToken);
        if (plan is null)
        {
            return RetentionOutcome.Nothing;
        }

        if (await MustWaitForProjectionsAsync(session.DocumentStore, plan, waitingSince ?? clock.GetUtcNow(), cancellationToken))
        {
            session.EjectAllPendingChanges();
            return RetentionOutcome.Waiting;
        }

        return await CommitAsync(session, plan, cancellationToken, queueNextRun);
    }

    /// <summary>
    /// Whether a projection has not read every event the step compacts away yet (see <see cref="DaemonProgress"/>), and
    /// the step may still wait for it.
    /// </summary>
    private async Task<bool> MustWaitForProjectionsAsync(IDocumentStore store, RetentionPlan plan, DateTimeOffset waitingSince, CancellationToken cancellationToken)
    {
        var (_, slowest) = await DaemonProgress.ReadAsync(store, cancellationToken);
        if (slowest >= plan.Compacted.LastEventSequence)
        {
            return false;
        }

        var waited = clock.GetUtcNow() - waitingSince;
        if (waited < options.CurrentValue.MaxProjectionWait)
        {
            return true;
        }

        LogUnreadCompacted(logger, plan.ConversationId, waited, slowest, plan.Compacted.LastEventSequence);
        return false;
    }

    /// <summary>
    /// Without the stream's lock: decides the step on the committed conversation, finds the version of its last message
    /// and runs the compaction up to it, which reads the step's events and queues its writes (and the archive copies) on
    /// <paramref name="session"/>. Null when there is nothing to do.
    /// </summary>
    internal async Task<RetentionPlan?> PlanAsync(IDocumentSession session, Guid conversationId, CancellationToken cancellationToken)
    {
        var pending = session.PendingChanges;
        if (pending.Operations().Any() || pending.Streams().Count > 0)
        {
            throw new InvalidOperationException("Retention needs a session with nothing pending: a stale plan is dropped with everything queued on it.");
        }

        var tenant = session.TenantId;
        var policy = options.CurrentValue.For(tenant);
        if (policy.Action is null)
        {
            return null;
        }

        // Only a stored revision counts: read it from the Summaries module, not from the event that triggered us.
        var summaries = services.GetService<IConversationSummaries>();
        var summary = summaries is null ? null : await summaries.GetCurrentAsync(tenant, conversationId, cancellationToken);
        if (summary is null)
        {
            return null;
        }

        // A session of its own: the writing session must not hold this copy in its identity map when it locks the stream.
        await using var query = session.DocumentStore.QuerySession(tenant);
        var conversation = await query.LoadAsync<Conversation>(conversationId, cancellationToken);
        if (conversation is null || RetentionRule.Next(conversation.MessageCount, conversation.RetainedThrough, summary.ToSequence, policy) is not { } step)
        {
            return null;
        }

        // The stream holds one event per hot message, in sequence order from RetainedThrough + 1: the step's last message
        // is the (To - From + 1)th of them. A walk over the (tenant, stream, version) index that reads no event's data.
        var lastVersion = await query.Events.QueryAllRawEvents()
            .Where(e => e.StreamId == conversationId && e.EventTypesAre(typeof(MessageAppended)))
            .OrderBy(e => e.Version)
            .Skip(checked((int)(step.ToSequence - step.FromSequence)))
            .Select(e => e.Version)
            .FirstOrDefaultAsync(cancellationToken);
        if (lastVersion == 0)
        {
            return null; // deleted meanwhile
        }

        var now = clock.GetUtcNow();
        var compacted = new CompactedMessages(step.Action == RetentionAction.Archived ? now : null);
        await session.Events.CompactStreamAsync<Conversation>(conversationId, request =>
        {
            request.Version = lastVersion;
            request.Archiver = compacted;
            request.CancellationToken = cancellationToken;
        });
        return new RetentionPlan(conversationId, policy, summary.ToSequence, conversation.RetainedThrough, step, compacted, now);
    }

    /// <summary>
    /// Under the stream's lock: commits <paramref name="plan"/> if the conversation's retained range is still the one it
    /// was made on, or drops everything it queued.
    /// </summary>
    /// <param name="queueNextRun">See <see cref="ApplyAsync"/>.</param>
    internal async Task<RetentionOutcome> CommitAsync(
        IDocumentSession session, RetentionPlan plan, CancellationToken cancellationToken, Func<ValueTask>? queueNextRun = null)
    {
        var tenant = session.TenantId;
        var conversationId = plan.ConversationId;
        var step = plan.Step;
        var stream = await session.Events.FetchForExclusiveWriting<Conversation>(conversationId, cancellationToken);
        if (stream.Aggregate is not { } conversation)
        {
            session.EjectAllPendingChanges();
            return RetentionOutcome.Nothing;
        }

        if (conversation.RetainedThrough != plan.RetainedThrough)
        {
            // Another retention compacted the stream since the plan read it: what the plan would compact is gone.
            session.EjectAllPendingChanges();
            var again = RetentionRule.Next(conversation.MessageCount, conversation.RetainedThrough, plan.SummaryThrough, plan.Policy) is not null;
            LogStalePlan(logger, conversationId, plan.RetainedThrough, conversation.RetainedThrough, again);
            if (again && queueNextRun is not null)
            {
                await queueNextRun();
            }

            return new RetentionOutcome(null, again);
        }

        var compacted = plan.Compacted;
        if (compacted.Messages != step.ToSequence - step.FromSequence + 1 || compacted.FirstSequence != step.FromSequence || compacted.LastSequence != step.ToSequence)
        {
            // Cannot happen while only retention compacts and every compaction moves RetainedThrough: refuse, loudly.
            session.EjectAllPendingChanges();
            throw new InvalidOperationException(
                $"Retention of conversation {conversationId} planned messages {step.FromSequence}-{step.ToSequence} but the compaction " +
                $"read {compacted.Messages} messages ({compacted.FirstSequence}-{compacted.LastSequence}); nothing was changed.");
        }

        session.HardDeleteWhere<StoredMessage>(m => m.ConversationId == conversationId && m.Sequence <= step.ToSequence);
        var applied = new RetentionApplied(
            conversationId,
            step.Action,
            step.FromSequence,
            step.ToSequence,
            compacted.Messages,
            compacted.Bytes,
            plan.Policy.Name,
            plan.SummaryThrough,
            plan.At);
        stream.AppendOne(applied);

        // Messages appended since the plan was read may let the policy go further now. The next run is queued before the
        // commit, so it is committed with this step (Wolverine sends nothing a handler enqueues after its session committed).
        var more = RetentionRule.Next(conversation.MessageCount, step.ToSequence, plan.SummaryThrough, plan.Policy) is not null;
        if (more && queueNextRun is not null)
        {
            await queueNextRun();
        }

        try
        {
            await session.SaveChangesAsync(CancellationToken.None);
        }
        finally
        {
            // Also when the save failed after its commit (the outbox's delivery after it): then the step is stored, and its
            // retry finds nothing left to do and would not bump either. A bump for a step not stored costs one cache miss.
            await generations.BumpAsync(ConversationContexts.Scope(tenant, conversationId));
        }

        metrics.RetentionApplied(applied);
        LogApplied(logger, conversationId, applied.Action, applied.FromSequence, applied.ToSequence, applied.Bytes, plan.Policy.Name);
        return new RetentionOutcome(applied, more);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Retention {Action} messages {From}-{To} ({Bytes} bytes) of conversation {ConversationId} under {Policy}")]
    private static partial void LogApplied(ILogger logger, Guid conversationId, RetentionAction action, long from, long to, long bytes, string policy);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Retention of conversation {ConversationId} compacts events the asynchronous projections have not read after waiting {Waited} (slowest at {Slowest}, the step's last event {Last}): they will not see them")]
    private static partial void LogUnreadCompacted(ILogger logger, Guid conversationId, TimeSpan waited, long slowest, long last);

    [LoggerMessage(Level = LogLevel.Information, Message = "Retention of conversation {ConversationId} was planned after message {Planned}, but another retention reached {Now} first: plan dropped (again: {Again})")]
    private static partial void LogStalePlan(ILogger logger, Guid conversationId, long planned, long now, bool again);

    /// <summary>
    /// Sees the events the compaction folds away: counts the messages among them and their bytes, keeps the external ids
    /// among them (<see cref="RetiredExternalId"/>) and, when archiving, copies them into the archive (queued on the same
    /// session, so they commit with the compaction or not at all).
    /// </summary>
    internal sealed class CompactedMessages(DateTimeOffset? archivedAt) : IEventsArchiver<IDocumentOperations>
    {
        public long Messages { get; private set; }

        public long Bytes { get; private set; }

        public long FirstSequence { get; private set; }

        public long LastSequence { get; private set; }

        /// <summary>The event store's sequence number of the last event folded away.</summary>
        public long LastEventSequence { get; private set; }

        public Task MaybeArchiveAsync<T>(IDocumentOperations operations, StreamCompactingRequest<T> request, IReadOnlyList<IEvent> events, CancellationToken cancellation)
            where T : class
        {
            LastEventSequence = events.Count > 0 ? events.Max(e => e.Sequence) : 0;
            var messages = events.Select(e => e.Data).OfType<MessageAppended>().ToArray();
            Messages = messages.Length;
            Bytes = messages.Sum(m => Conversation.ContentBytes(m.Content));
            FirstSequence = messages.Length > 0 ? messages[0].Sequence : 0;
            LastSequence = messages.Length > 0 ? messages[^1].Sequence : 0;
            if (archivedAt is { } at && messages.Length > 0)
            {
                operations.Store(messages.Select(m => ArchivedMessage.From(m, at)).ToArray());
            }

            // Archived or deleted, a message's external id stays known: an append retried with it is still a duplicate.
            var keys = messages.Select(RetiredExternalId.From).OfType<RetiredExternalId>().ToArray();
            if (keys.Length > 0)
            {
                operations.Store(keys);
            }

            return Task.CompletedTask;
        }
    }
}

/// <summary>What one retention run did.</summary>
/// <param name="Applied">The step it committed, if any.</param>
/// <param name="MoreDue">The policy allows another step now (appends or another node's retention moved the conversation on while this one ran).</param>
public sealed record RetentionOutcome(RetentionApplied? Applied, bool MoreDue)
{
    public static readonly RetentionOutcome Nothing = new(null, false);

    /// <summary>A step is due but waits for the asynchronous projections: nothing was changed, run again later.</summary>
    public static readonly RetentionOutcome Waiting = new(null, false) { WaitsForProjections = true };

    /// <summary>See <see cref="Waiting"/>.</summary>
    public bool WaitsForProjections { get; private init; }
}

/// <summary>A retention step decided and prepared without the stream's lock (its writes are queued on the session).</summary>
/// <param name="RetainedThrough">The conversation's retained range when the plan was read: the plan holds while it is unchanged.</param>
internal sealed record RetentionPlan(
    Guid ConversationId,
    RetentionPolicy Policy,
    long SummaryThrough,
    long RetainedThrough,
    RetentionStep Step,
    RetentionExecutor.CompactedMessages Compacted,
    DateTimeOffset At);
