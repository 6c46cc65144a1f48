using Marten.Schema;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Domain;

/// <summary>
/// A conversation's state, folded from its event stream and kept as an inline snapshot:
/// commands decide from it, and it is the conversation view that reads return.
/// Immutable: Marten's identity map may hand the same instance to several readers.
/// </summary>
public sealed partial record Conversation
{
    public Guid Id { get; init; }

    public string Title { get; init; } = "";

    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string>();

    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>Last time a message was appended (or the creation time): the list's sort key.</summary>
    public DateTimeOffset LastActivityAt { get; init; }

    /// <summary>Number of messages, which is also the sequence of the last one.</summary>
    public long MessageCount { get; init; }

    public long TotalTokens { get; init; }

    /// <summary>The stream version, set by Marten: the value clients pass as expectedVersion.</summary>
    public long Version { get; set; }

    /// <summary>
    /// Marten's hook for the document's storage: the list reads a tenant's conversations newest activity
    /// first, keyset-paged on (last activity, id), which this one index serves.
    /// </summary>
    public static void ConfigureMarten(DocumentMapping mapping)
    {
        mapping.DuplicateField(nameof(LastActivityAt), notNull: true);
        mapping.AddIndex("tenant_id", "last_activity_at", "id").Name = "ix_conversation_activity";
    }

    public static Conversation Create(ConversationStarted e) => new()
    {
        Id = e.ConversationId,
        Title = e.Title,
        Metadata = e.Metadata,
        CreatedAt = e.StartedAt,
        LastActivityAt = e.StartedAt,
    };

    public Conversation Apply(ConversationRenamed e) => this with { Title = e.Title };

    public Conversation Apply(MessageAppended e) => this with
    {
        MessageCount = e.Sequence,
        TotalTokens = TotalTokens + e.TokenCount,
        LastActivityAt = e.AppendedAt > LastActivityAt ? e.AppendedAt : LastActivityAt,
    };

    public bool ShouldDelete(ConversationDeleted e) => true;
}
