using Marten;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.Conversations.Contracts;
using ModularChat.Search.Storage;

namespace ModularChat.Search.Projection;

/// <summary>
/// Takes deleted content out of the search read model as soon as Conversations says so (durable, off the request path),
/// without waiting for the asynchronous projection: Conversations purges a deleted conversation's event stream, and
/// retention compacts deleted messages out of it, so the projection may never read those events. The projection applies
/// the same removals when it does read them; both are idempotent. The database away (a deadlock or serialization failure
/// included) is retried for as long as it takes (<see cref="DatabaseOutages"/>), any other failure three times, then the
/// message is kept in the dead-letter store, reported by <see cref="SearchCleanupDeadLetters"/>
/// (<see cref="ReportedDeadLetters.RetryOtherFailures"/>). The projection, which may write the same rows at that moment, is
/// waited for: <see cref="SearchRemovals.LockTenantTerms"/>.
/// </summary>
public static class SearchCleanupHandler
{
    public static void Handle(ConversationDeleted deleted, IDocumentSession session)
    {
        SearchRemovals.LockTenantTerms(session);
        Removals(session).Conversation(session, deleted.ConversationId, deleted.DeletedAt);
    }

    public static void Handle(RetentionApplied applied, IDocumentSession session)
    {
        // Archived messages stay readable, so they stay searchable while the read model holds them.
        if (applied.Action == RetentionAction.Deleted)
        {
            SearchRemovals.LockTenantTerms(session);
            Removals(session).Messages(session, applied.ConversationId, applied.FromSequence, applied.ToSequence);
        }
    }

    private static SearchRemovals Removals(IDocumentSession session) => new(new SearchSchema(session.DocumentStore.Options.DatabaseSchemaName));
}
