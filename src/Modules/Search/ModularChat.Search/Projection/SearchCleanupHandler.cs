using Marten;
using Npgsql;
using Wolverine.ErrorHandling;
using Wolverine.Runtime.Handlers;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.Conversations.Contracts;
using ModularChat.Search.Storage;

namespace ModularChat.Search.Projection;

/// <summary>
/// Takes deleted content out of the search read model as soon as Conversations says so (durable, off the request path),
/// without waiting for the asynchronous projection: Conversations purges a deleted conversation's event stream, and
/// retention compacts deleted messages out of it, so the projection may never read those events. The projection applies
/// the same removals when it does read them; both are idempotent.
/// </summary>
public static class SearchCleanupHandler
{
    /// <summary>
    /// Another database error (looked for inside Marten's exception around it: matched on the exception itself, the rule
    /// never applied, and the first failure went to the dead-letter store, unreported): retry, then keep the message in the dead-letter
    /// store rather than lose it, reported by <see cref="SearchCleanupDeadLetters"/>. (A deadlock or serialization failure,
    /// and the database away, are retried for as long as it takes: <see cref="DatabaseOutages"/>. The projection, which may
    /// write the same rows at that moment, is waited for: <see cref="SearchRemovals.LockTenantTerms"/>.)
    /// </summary>
    public static void Configure(HandlerChain chain)
        => chain.OnException(e => e.InChain(x => x is NpgsqlException) && !DatabaseOutages.IsDatabaseAway(e), "a database error")
            .RetryWithCooldown(TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5))
            .MoveToErrorQueueReported();

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
