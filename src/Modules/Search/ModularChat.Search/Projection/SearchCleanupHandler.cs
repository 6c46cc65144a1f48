using Marten;
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
    public static void Handle(ConversationDeleted deleted, IDocumentSession session)
        => Removals(session).Conversation(session, deleted.ConversationId, deleted.DeletedAt);

    public static void Handle(RetentionApplied applied, IDocumentSession session)
    {
        // Archived messages stay readable, so they stay searchable while the read model holds them.
        if (applied.Action == RetentionAction.Deleted)
        {
            Removals(session).Messages(session, applied.ConversationId, applied.FromSequence, applied.ToSequence);
        }
    }

    private static SearchRemovals Removals(IDocumentSession session) => new(new SearchSchema(session.DocumentStore.Options.DatabaseSchemaName));
}
