namespace ModularChat.Conversations.Contracts;

/// <summary>A stored message as other modules read it.</summary>
public sealed record ConversationMessage(
    Guid ConversationId,
    Guid MessageId,
    long Sequence,
    MessageRole Role,
    string Content,
    string? ExternalId,
    IReadOnlyDictionary<string, string>? Metadata,
    DateTimeOffset CreatedAt,
    DateTimeOffset AppendedAt,
    int TokenCount);

/// <summary>A conversation's current state as other modules read it.</summary>
/// <param name="MessageCount">Number of messages, which is also the sequence of the latest one.</param>
/// <param name="TotalTokens">Tokens of every message ever appended (archived and deleted ones included).</param>
/// <param name="Version">The conversation's version as clients see it (and pass as expectedVersion): its start, messages and renames; background retention does not change it.</param>
public sealed record ConversationInfo(
    Guid ConversationId,
    string Title,
    long MessageCount,
    long TotalTokens,
    DateTimeOffset CreatedAt,
    DateTimeOffset LastActivityAt,
    long Version)
{
    /// <summary>The conversation's metadata.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// The ranges retention archived or deleted, oldest first (empty when it has touched nothing). Archived messages are
    /// read with <see cref="IConversationMessages.ReadArchivedChunksAsync"/>; deleted ones are gone from the database.
    /// </summary>
    public IReadOnlyList<RetainedMessages> Retained { get; init; } = [];
}

/// <summary>A range of messages retention archived or deleted (<see cref="ConversationInfo.Retained"/>).</summary>
public sealed record RetainedMessages(RetentionAction Action, long FromSequence, long ToSequence);

/// <summary>A message another module writes into a conversation on the user's behalf (e.g. a chat turn).</summary>
public sealed record NewConversationMessage(
    MessageRole Role,
    string Content,
    string? ExternalId = null,
    IReadOnlyDictionary<string, string>? Metadata = null,
    DateTimeOffset? CreatedAt = null);

/// <summary>What an append stored: the message's id and sequence, and whether it already existed (same external id).</summary>
public sealed record AppendedConversationMessage(Guid MessageId, long Sequence, string? ExternalId, int TokenCount, bool Duplicate);

/// <summary>A live conversation's counts, as <see cref="IConversationMessages.ListTalliesAsync"/> pages through them.</summary>
/// <param name="MessageCount">Its last message's sequence (messages retention took out included).</param>
public sealed record ConversationTally(string TenantId, Guid ConversationId, long MessageCount, long TotalTokens, DateTimeOffset LastActivityAt);

/// <summary>
/// How other modules read and write conversations without touching the Conversations module's storage.
/// Every call names its tenant explicitly, so background work (which has no caller) uses it the same way.
/// </summary>
public interface IConversationMessages
{
    /// <summary>The conversation, or null when it does not exist for this tenant (or was deleted).</summary>
    Task<ConversationInfo?> FindAsync(string tenantId, Guid conversationId, CancellationToken cancellationToken = default);

    /// <summary>
    /// Ids of up to <paramref name="limit"/> of the tenant's conversations whose metadata holds every pair of
    /// <paramref name="metadata"/> (exact; two values for one key match nothing), newest activity first.
    /// </summary>
    Task<IReadOnlyList<Guid>> FindIdsByMetadataAsync(
        string tenantId, IReadOnlyCollection<KeyValuePair<string, string>> metadata, int limit, CancellationToken cancellationToken = default);

    /// <summary>
    /// Up to <paramref name="limit"/> live conversations with messages, of every tenant (or of <paramref name="tenantId"/>),
    /// in (tenant, id) order after <paramref name="after"/>: for a module to check, now and then, that it followed every
    /// append (one index range per page, whatever the number of conversations).
    /// </summary>
    Task<IReadOnlyList<ConversationTally>> ListTalliesAsync(
        string? tenantId, (string TenantId, Guid ConversationId)? after, int limit, CancellationToken cancellationToken = default);

    /// <summary>
    /// Messages with <paramref name="afterSequence"/> &lt; sequence &lt;= <paramref name="upToSequence"/>, oldest first,
    /// in chunks of at most <paramref name="chunkSize"/> read one database page at a time: a caller that processes
    /// each chunk before asking for the next never holds more than one chunk in memory.
    /// </summary>
    IAsyncEnumerable<IReadOnlyList<ConversationMessage>> ReadChunksAsync(
        string tenantId, Guid conversationId, long afterSequence, long upToSequence, int chunkSize,
        CancellationToken cancellationToken = default);

    /// <summary>
    /// The messages retention archived (moved out of the event stream, still readable) with <paramref name="afterSequence"/>
    /// &lt; sequence &lt;= <paramref name="upToSequence"/>, oldest first, in chunks as <see cref="ReadChunksAsync"/> reads.
    /// </summary>
    IAsyncEnumerable<IReadOnlyList<ConversationMessage>> ReadArchivedChunksAsync(
        string tenantId, Guid conversationId, long afterSequence, long upToSequence, int chunkSize,
        CancellationToken cancellationToken = default);

    /// <summary>
    /// The message holding <paramref name="externalId"/>, hot or archived; null when none does (or retention deleted it).
    /// </summary>
    Task<ConversationMessage?> FindByExternalIdAsync(
        string tenantId, Guid conversationId, string externalId, CancellationToken cancellationToken = default);

    /// <summary>
    /// The sequence of the message that held <paramref name="externalId"/> when retention has deleted it (its idempotency
    /// key is kept, its content is not); null when no deleted message held it.
    /// </summary>
    Task<long?> FindDeletedSequenceAsync(
        string tenantId, Guid conversationId, string externalId, CancellationToken cancellationToken = default);

    /// <summary>Up to <paramref name="count"/> of the latest messages (before <paramref name="beforeSequence"/> when given), oldest first.</summary>
    Task<IReadOnlyList<ConversationMessage>> ReadLatestAsync(
        string tenantId, Guid conversationId, int count, long? beforeSequence = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Appends messages in one transaction with the same rules as the REST API (validation, limits, idempotency on
    /// external id, integration events).
    /// </summary>
    /// <remarks>Throws the same errors as the API (not found, validation, limits, conflict), which map to 4xx ProblemDetails over HTTP.</remarks>
    /// <param name="firstStoredWins">
    /// False (as over HTTP): a message whose external id the conversation already holds with another role or content is a
    /// conflict (nothing of the call is stored). True, for a writer that may race itself with different messages under the
    /// same ids (two runs of one chat turn): when the conversation holds any of the call's external ids, another run was
    /// stored first and nothing of this call is stored. Every message is then answered as a <c>Duplicate</c>: with the
    /// message stored under its id, or, where the first run stored none, with an empty id and sequence 0.
    /// </param>
    Task<IReadOnlyList<AppendedConversationMessage>> AppendAsync(
        string tenantId, Guid conversationId, IReadOnlyList<NewConversationMessage> messages, bool firstStoredWins = false,
        CancellationToken cancellationToken = default);
}
