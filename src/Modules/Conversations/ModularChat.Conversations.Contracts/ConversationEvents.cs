namespace ModularChat.Conversations.Contracts;

/// <summary>Who wrote a message.</summary>
public enum MessageRole
{
    /// <summary>The end user.</summary>
    User,

    /// <summary>The model's answer.</summary>
    Assistant,

    /// <summary>Instructions to the model.</summary>
    System,

    /// <summary>A tool's call or result.</summary>
    Tool,
}

/// <summary>
/// Integration events of the Conversations module. They are the events of each
/// conversation's stream in the event store, forwarded to Wolverine when they commit,
/// so other modules subscribe to them without reading Conversations' storage.
/// The tenant travels on the Wolverine envelope.
/// </summary>
public interface IConversationEvent
{
    /// <summary>The conversation (event stream) the event belongs to.</summary>
    Guid ConversationId { get; }
}

/// <summary>A conversation was created.</summary>
/// <param name="ConversationId">The new conversation's id.</param>
/// <param name="Title">Its title.</param>
/// <param name="Metadata">Free key/value metadata from the client.</param>
/// <param name="StartedAt">When it was created (server time).</param>
public sealed record ConversationStarted(
    Guid ConversationId,
    string Title,
    IReadOnlyDictionary<string, string> Metadata,
    DateTimeOffset StartedAt) : IConversationEvent;

/// <summary>A conversation's title changed.</summary>
public sealed record ConversationRenamed(Guid ConversationId, string Title, DateTimeOffset RenamedAt) : IConversationEvent;

/// <summary>A conversation's metadata changed.</summary>
/// <param name="ConversationId">The conversation.</param>
/// <param name="Metadata">All of its metadata after the change (not only the keys that changed).</param>
/// <param name="ChangedAt">When it changed (server time).</param>
public sealed record ConversationMetadataChanged(
    Guid ConversationId,
    IReadOnlyDictionary<string, string> Metadata,
    DateTimeOffset ChangedAt) : IConversationEvent;

/// <summary>A message was added to a conversation.</summary>
/// <param name="ConversationId">The conversation.</param>
/// <param name="MessageId">The message's own id.</param>
/// <param name="Sequence">Its position in the conversation: 1, 2, 3... without gaps.</param>
/// <param name="Role">Who wrote it.</param>
/// <param name="Content">Its text.</param>
/// <param name="ExternalId">The client's id for it, unique within the conversation, when given.</param>
/// <param name="Metadata">Free key/value metadata from the client.</param>
/// <param name="CreatedAt">When the client says it was written (defaults to <paramref name="AppendedAt"/>).</param>
/// <param name="AppendedAt">When the server stored it.</param>
/// <param name="TokenCount">Its length in o200k tokens.</param>
public sealed record MessageAppended(
    Guid ConversationId,
    Guid MessageId,
    long Sequence,
    MessageRole Role,
    string Content,
    string? ExternalId,
    IReadOnlyDictionary<string, string>? Metadata,
    DateTimeOffset CreatedAt,
    DateTimeOffset AppendedAt,
    int TokenCount) : IConversationEvent;

/// <summary>A conversation was deleted: every module removes what it derived from it.</summary>
public sealed record ConversationDeleted(Guid ConversationId, DateTimeOffset DeletedAt) : IConversationEvent;

/// <summary>What retention did to a range of messages.</summary>
public enum RetentionAction
{
    /// <summary>Moved out of the event stream and the hot message table into the archive; still readable.</summary>
    Archived,

    /// <summary>Removed from the database for good.</summary>
    Deleted,
}

/// <summary>
/// Retention archived or deleted a range of a conversation's messages, all of them covered by a stored summary
/// revision and none among the last messages the policy keeps.
/// </summary>
/// <param name="FromSequence">First message sequence of the range.</param>
/// <param name="ToSequence">Last message sequence of the range.</param>
/// <param name="Messages">Messages in the range.</param>
/// <param name="Bytes">UTF-8 bytes of their content.</param>
/// <param name="Policy">The policy that decided it.</param>
/// <param name="SummaryThrough">The last sequence the summary revision that allowed it covers.</param>
public sealed record RetentionApplied(
    Guid ConversationId,
    RetentionAction Action,
    long FromSequence,
    long ToSequence,
    long Messages,
    long Bytes,
    string Policy,
    long SummaryThrough,
    DateTimeOffset AppliedAt) : IConversationEvent;
