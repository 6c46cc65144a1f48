using Marten.Schema;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Domain;

/// <summary>
/// A message retention moved to the archive: no longer in the event stream nor among the hot
/// <see cref="StoredMessage"/>s, still readable with includeArchived=true. Written by retention, not by a
/// projection, so rebuilding projections never loses it.
/// </summary>
public sealed record ArchivedMessage
{
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

    public DateTimeOffset ArchivedAt { get; init; }

    /// <summary>
    /// Marten's storage hook: an index by tenant, conversation and sequence, and one by the time each row was written
    /// (Marten's <c>mt_last_modified</c>), with which the retired keys' backfill at start reads only what was archived
    /// since its last complete pass (<see cref="RetiredKeysBackfillMark"/>).
    /// </summary>
    public static void ConfigureMarten(DocumentMapping mapping)
    {
        mapping.DuplicateField(nameof(ConversationId), notNull: true);
        mapping.DuplicateField(nameof(Sequence), notNull: true);
        var bySequence = mapping.AddIndex("tenant_id", "conversation_id", "sequence");
        bySequence.IsUnique = true;
        bySequence.Name = "ux_archived_message_sequence";
        mapping.AddIndex("mt_last_modified").Name = "ix_archived_message_written";
    }

    public static ArchivedMessage From(MessageAppended e, DateTimeOffset archivedAt) => new()
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
        ArchivedAt = archivedAt,
    };

    public StoredMessage ToStored() => new()
    {
        Id = Id,
        ConversationId = ConversationId,
        Sequence = Sequence,
        Role = Role,
        Content = Content,
        ExternalId = ExternalId,
        Metadata = Metadata,
        CreatedAt = CreatedAt,
        AppendedAt = AppendedAt,
        TokenCount = TokenCount,
    };
}
