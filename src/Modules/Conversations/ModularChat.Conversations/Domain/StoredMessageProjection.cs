using Marten;
using Marten.Events.Projections;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Domain;

/// <summary>Keeps one <see cref="StoredMessage"/> per appended message, inline with the append.</summary>
public sealed partial class StoredMessageProjection : EventProjection
{
    public StoredMessageProjection() => Name = "StoredMessages";

    public StoredMessage Create(MessageAppended e) => StoredMessage.From(e);

    public void Project(ConversationDeleted e, IDocumentOperations operations)
    {
        operations.HardDeleteWhere<StoredMessage>(m => m.ConversationId == e.ConversationId);
        operations.HardDeleteWhere<ArchivedMessage>(m => m.ConversationId == e.ConversationId);
    }
}
