using Marten.Schema;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Domain;

/// <summary>One message as readers page through it: a document per <see cref="MessageAppended"/>.</summary>
public sealed record StoredMessage
{
    /// <summary>The message id (document id).</summary>
    public Guid Id { get; init; }

    public Guid ConversationId { get; init; }

    public long Sequence { get; init; }

    public MessageRole Role { get; init; }

    public string Content { get; init; } = "";

    public string? ExternalId { get; init; }

    public IReadOnlyDictionary<string, string>? Metadata { get; init; }

    public DateTimeOffset CreatedAt { get; init; }

    public DateTimeOffset AppendedAt { get; init; }

    public int TokenCount { get; init; }

    /// <summary>
    /// Marten's hook for a document's storage (called once when the store is built). Two unique indexes,
    /// both led by the tenant, serve every message query (by sequence, by external id) and make the database
    /// refuse a second message with the same sequence or external id. Leading with tenant_id matters: for a
    /// tenant newer than the table statistics the planner otherwise prefers the (tenant_id, id) primary key
    /// and filters every message of the tenant. No single-column indexes: each would cost an index insert
    /// per message for no query.
    /// </summary>
    public static void ConfigureMarten(DocumentMapping mapping)
    {
        mapping.DuplicateField(nameof(ConversationId), notNull: true);
        mapping.DuplicateField(nameof(Sequence), notNull: true);
        mapping.DuplicateField(nameof(ExternalId));
        var bySequence = mapping.AddIndex("tenant_id", "conversation_id", "sequence");
        bySequence.IsUnique = true;
        bySequence.Name = "ux_stored_message_sequence";
        var byExternalId = mapping.AddIndex("tenant_id", "conversation_id", "external_id");
        byExternalId.IsUnique = true;
        byExternalId.Name = "ux_stored_message_external_id";
    }

    public static StoredMessage From(MessageAppended e) => new()
    {
        Id = e.MessageId,
        ConversationId = e.ConversationId,
        Sequence = e.Sequence,
        Role = e.Role,
        Content = e.Content,
        ExternalId = e.ExternalId,
        Metadata = e.Metadata,
        CreatedAt = e.CreatedAt,
        AppendedAt = e.AppendedAt,
        TokenCount = e.TokenCount,
    };
}
