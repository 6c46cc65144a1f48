using Marten;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;
using Wolverine;

namespace ModularChat.Summaries.Jobs;

/// <summary>Writes a summary revision (a durable job, with retries, then the dead-letter store).</summary>
public static class SummarizeConversationHandler
{
    public static Task<OutgoingMessages> Handle(
        SummarizeConversation job, IDocumentSession session, Envelope envelope, SummaryWriter writer, CancellationToken cancellationToken)
        => writer.RunAsync(job, session, envelope, cancellationToken);
}

/// <summary>
/// Removes what the module derived from a conversation: on its deletion (from <see cref="SummariesEventSubscription"/>), or
/// when a job that finished after the deletion finds it gone.
/// </summary>
public static class SummaryCleanupHandler
{
    public static async Task Handle(
        VerifySummarizedConversation verify, IDocumentSession session, IConversationMessages conversations, SummaryFailures failures, CancellationToken cancellationToken)
    {
        if (await conversations.FindAsync(session.TenantId, verify.ConversationId, cancellationToken) is null)
        {
            await RemoveAsync(session, session.TenantId, failures, verify.ConversationId, cancellationToken);
        }
    }

    /// <summary>Every row the module holds for the conversation goes: read models, the summary stream's events, failed jobs.</summary>
    internal static async Task RemoveAsync(IDocumentOperations operations, string tenantId, SummaryFailures failures, Guid conversationId, CancellationToken cancellationToken)
    {
        operations.Delete<ConversationActivity>(conversationId);
        operations.Delete<SummaryProgress>(conversationId);
        operations.Delete<SummaryView>(conversationId);
        operations.DeleteWhere<SummaryRevisionView>(r => r.ConversationId == conversationId);

        // A hard delete of the summary stream, in this transaction (Marten's own helper runs outside any session).
        var tables = operations.DocumentStore.Options.Schema;
        var stream = SummaryStreams.For(conversationId);
        operations.QueueSqlCommand($"delete from {tables.ForEvents()} where stream_id = ? and tenant_id = ?", stream, tenantId);
        operations.QueueSqlCommand($"delete from {tables.ForStreams()} where id = ? and tenant_id = ?", stream, tenantId);

        await failures.DiscardAsync(tenantId, conversationId, cancellationToken);
    }
}
