using Marten;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;
using Wolverine;

namespace ModularChat.Summaries.Jobs;

/// <summary>Append notices (<see cref="AppendsCommitted"/>), batched per tenant (see ADR 0004): updates the activity read model and queues jobs when due.</summary>
public static class AppendCommittedHandler
{
    public static Task<OutgoingMessages> Handle(AppendsCommitted[] notices, IDocumentSession session, SummaryScheduler scheduler, CancellationToken cancellationToken)
        => scheduler.TrackAsync([.. notices.SelectMany(n => n.Appends)], session, cancellationToken);
}

/// <summary>Writes a summary revision (a durable job, with retries, then the dead-letter store).</summary>
public static class SummarizeConversationHandler
{
    public static Task<OutgoingMessages> Handle(
        SummarizeConversation job, IDocumentSession session, Envelope envelope, SummaryWriter writer, CancellationToken cancellationToken)
        => writer.RunAsync(job, session, envelope, cancellationToken);
}

/// <summary>Removes what the module derived from a conversation when it is deleted (or found deleted after the fact).</summary>
public static class SummaryCleanupHandler
{
    public static Task Handle(
        ConversationDeleted deleted, IDocumentSession session, IMessageContext context, TimeProvider clock, SummaryFailures failures,
        CancellationToken cancellationToken)
        => RemoveAsync(session, context, clock, failures, deleted.ConversationId, cancellationToken);

    public static async Task Handle(
        VerifySummarizedConversation verify, IDocumentSession session, IMessageContext context, TimeProvider clock,
        IConversationMessages conversations, SummaryFailures failures, CancellationToken cancellationToken)
    {
        if (await conversations.FindAsync(session.TenantId, verify.ConversationId, cancellationToken) is null)
        {
            await RemoveAsync(session, context, clock, failures, verify.ConversationId, cancellationToken);
        }
    }

    /// <summary>
    /// A deleted conversation's summary stream goes once Marten's daemon has read past its last event (ADR 0009): removed
    /// at once, a revision written just before the deletion left a hole above the high-water mark that held every
    /// asynchronous projection for 3 s. At most <see cref="SummariesOptions.PurgeMaxWait"/> after the deletion.
    /// </summary>
    public static async Task Handle(
        PurgeSummaryStream purge, IDocumentSession session, IMessageContext context, TimeProvider clock, IOptions<SummariesOptions> options,
        ILogger<PurgeSummaryStream> logger, CancellationToken cancellationToken)
    {
        var check = await DaemonProgress.RemoveStreamAsync(session.DocumentStore, session.TenantId, SummaryStreams.For(purge.ConversationId),
            purge.RequestedAt, options.Value.PurgeMaxWait, clock, cancellationToken);
        if (check.Wait)
        {
            await context.ScheduleAsync(purge with { Attempt = purge.Attempt + 1 }, DaemonProgress.RecheckDelay(purge.Attempt));
        }
        else if (check.Unread)
        {
            logger.LogWarning(
                "Removed the summary stream of deleted conversation {ConversationId} after {Waited} although the slowest asynchronous projection ({Slowest}) had not read its last event ({Last})",
                purge.ConversationId, check.Waited, check.SlowestProjection, check.LastEvent);
        }
    }

    /// <summary>
    /// Every row the module holds for the conversation goes: read models and failed jobs at once, the summary stream's
    /// events once the daemon has read them (<see cref="PurgeSummaryStream"/>, queued in this transaction).
    /// </summary>
    internal static async Task RemoveAsync(
        IDocumentSession session, IMessageContext context, TimeProvider clock, SummaryFailures failures, Guid conversationId,
        CancellationToken cancellationToken)
    {
        session.Delete<ConversationActivity>(conversationId);
        session.Delete<SummaryProgress>(conversationId);
        session.Delete<SummaryClaim>(conversationId);
        session.Delete<SummaryView>(conversationId);
        session.DeleteWhere<SummaryRevisionView>(r => r.ConversationId == conversationId);
        await context.PublishAsync(new PurgeSummaryStream(conversationId, clock.GetUtcNow()));
        await failures.DiscardAsync(session.TenantId, conversationId, cancellationToken);
    }
}

/// <summary>A deleted conversation's summary stream, to be removed once the daemon has read past it (tenant on the envelope).</summary>
/// <param name="RequestedAt">When the removal was asked for: it waits for the daemon at most <see cref="SummariesOptions.PurgeMaxWait"/> after.</param>
/// <param name="Attempt">How many times it has been put off (the pause grows with it).</param>
public sealed record PurgeSummaryStream(Guid ConversationId, DateTimeOffset RequestedAt, int Attempt = 0);
