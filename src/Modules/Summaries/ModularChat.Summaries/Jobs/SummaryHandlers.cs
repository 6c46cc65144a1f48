using Marten;
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
    public static Task Handle(ConversationDeleted deleted, IDocumentSession session, SummaryFailures failures, CancellationToken cancellationToken)
        => RemoveAsync(session, failures, deleted.ConversationId, cancellationToken);

    public static async Task Handle(
        VerifySummarizedConversation verify, IDocumentSession session, IConversationMessages conversations, SummaryFailures failures, CancellationToken cancellationToken)
    {
        if (await conversations.FindAsync(session.TenantId, verify.ConversationId, cancellationToken) is null)
        {
            await RemoveAsync(session, failures, verify.ConversationId, cancellationToken);
        }
    }

    /// <summary>Every row the module holds for the conversation goes: read models, the summary stream's events, failed jobs.</summary>
    internal static async Task RemoveAsync(IDocumentSession session, SummaryFailures failures, Guid conversationId, CancellationToken cancellationToken)
    {
        session.Delete<ConversationActivity>(conversationId);
        session.Delete<SummaryProgress>(conversationId);
        session.Delete<SummaryView>(conversationId);
        session.DeleteWhere<SummaryRevisionView>(r => r.ConversationId == conversationId);

        // A hard delete of the summary stream, in this transaction (Marten's own helper runs outside any session).
        var tables = session.DocumentStore.Options.Schema;
        var stream = SummaryStreams.For(conversationId);
        session.QueueSqlCommand($"delete from {tables.ForEvents()} where stream_id = ? and tenant_id = ?", stream, session.TenantId);
        session.QueueSqlCommand($"delete from {tables.ForStreams()} where id = ? and tenant_id = ?", stream, session.TenantId);

        await failures.DiscardAsync(session.TenantId, conversationId, cancellationToken);
    }
}
