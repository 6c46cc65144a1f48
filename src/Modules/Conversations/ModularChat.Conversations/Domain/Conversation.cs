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

    /// <summary>The stream version, set by Marten (every event counts, retention's too).</summary>
    public long Version { get; set; }

    /// <summary>
    /// The retention steps applied to the conversation (each a <see cref="RetentionApplied"/> event on its stream). Retention
    /// runs in the background and changes nothing a client sees as the conversation, so it does not count in
    /// <see cref="ClientVersion"/>.
    /// </summary>
    public long RetentionSteps { get; init; }

    /// <summary>
    /// The version clients see and pass as expectedVersion: the changes clients make (its start, messages, renames, metadata changes), not
    /// the background's. A client that appends with the version of its last answer is not refused because retention ran.
    /// </summary>
    public long ClientVersion => Version - RetentionSteps;

    /// <summary>Messages up to this sequence were archived or deleted by retention (0: none).</summary>
    public long RetainedThrough { get; init; }

    /// <summary>UTF-8 bytes of the content of the messages still in the hot store.</summary>
    public long HotBytes { get; init; }

    /// <summary>The archived and deleted ranges, oldest first (adjacent ranges of the same action merged).</summary>
    public IReadOnlyList<RetainedRange> Retained { get; init; } = [];

    /// <summary>
    /// Marten's hook for the document's storage: the list reads a tenant's conversations newest activity
    /// first, keyset-paged on (last activity, id), which the first index serves; filtered by metadata, it matches by
    /// containment, which the second serves: GIN over the tenant (<c>btree_gin</c>) and the metadata (<c>jsonb_path_ops</c>),
    /// so one scan finds exactly the tenant's matches. Until 2026-12-07 it was over the metadata alone: a pair common in
    /// other tenants (an app name, say) made every filter on it read every tenant's matches, then keep the caller's. The
    /// <c>btree_gin</c> extension is created by the Search module's schema objects, which Marten applies before the
    /// documents' tables (SchemaTests starts a node on an empty database).
    /// </summary>
    public static void ConfigureMarten(DocumentMapping mapping)
    {
        mapping.DuplicateField(nameof(LastActivityAt), notNull: true);
        mapping.AddIndex("tenant_id", "last_activity_at", "id").Name = "ix_conversation_activity";
        var metadata = mapping.AddIndex("tenant_id", MetadataExpression);
        metadata.Name = "ix_conversation_metadata";
        metadata.ToGinWithJsonbPathOps();
    }

    /// <summary>
    /// The metadata in the document's JSON: the expression the metadata filter compares (<see cref="ConversationMetadataFilter"/>),
    /// which the planner matches with the index's.
    /// </summary>
    private const string MetadataExpression = "(data -> 'Metadata')";

    public static Conversation Create(ConversationStarted e) => new()
    {
        Id = e.ConversationId,
        Title = e.Title,
        Metadata = e.Metadata,
        CreatedAt = e.StartedAt,
        LastActivityAt = e.StartedAt,
    };

    public Conversation Apply(ConversationRenamed e) => this with { Title = e.Title };

    public Conversation Apply(ConversationMetadataChanged e) => this with { Metadata = e.Metadata };

    public Conversation Apply(MessageAppended e) => this with
    {
        MessageCount = e.Sequence,
        TotalTokens = TotalTokens + e.TokenCount,
        HotBytes = HotBytes + ContentBytes(e.Content),
        LastActivityAt = e.AppendedAt > LastActivityAt ? e.AppendedAt : LastActivityAt,
    };

    public Conversation Apply(RetentionApplied e) => this with
    {
        RetentionSteps = RetentionSteps + 1,
        RetainedThrough = Math.Max(RetainedThrough, e.ToSequence),
        HotBytes = Math.Max(0, HotBytes - e.Bytes),
        Retained = Retained.Count > 0 && Retained[^1].Action == e.Action && Retained[^1].ToSequence + 1 == e.FromSequence
            ? [.. Retained.Take(Retained.Count - 1), Retained[^1] with { ToSequence = e.ToSequence, Messages = Retained[^1].Messages + e.Messages, Bytes = Retained[^1].Bytes + e.Bytes }]
            : [.. Retained, new RetainedRange(e.Action, e.FromSequence, e.ToSequence, e.Messages, e.Bytes)],
    };

    public static long ContentBytes(string content) => System.Text.Encoding.UTF8.GetByteCount(content);

    public bool ShouldDelete(ConversationDeleted e) => true;
}

/// <summary>A range of messages retention archived or deleted.</summary>
public sealed record RetainedRange(RetentionAction Action, long FromSequence, long ToSequence, long Messages, long Bytes);
