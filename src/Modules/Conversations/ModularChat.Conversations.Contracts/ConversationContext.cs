namespace ModularChat.Conversations.Contracts;

/// <summary>
/// What a chat app sends its model for the next turn: the current summary (when there is one and it fits)
/// and as many of the most recent messages as fit in the token budget, oldest first.
/// </summary>
/// <param name="MaxTokens">The budget asked for.</param>
/// <param name="TotalTokens">Tokens of the summary and messages included (o200k, with the per-message overhead); never above <paramref name="MaxTokens"/>.</param>
/// <param name="Summary">The current summary, when there is one and it fits.</param>
/// <param name="Messages">The most recent messages that fit, oldest first.</param>
/// <param name="Coverage">Which part of the conversation the context represents.</param>
/// <param name="SearchHits">With a query: the best matching earlier messages not already included (empty without a query or a search module).</param>
public sealed record ConversationContext(
    Guid ConversationId,
    int MaxTokens,
    int TotalTokens,
    ContextSummary? Summary,
    IReadOnlyList<ContextMessage> Messages,
    ContextCoverage Coverage,
    IReadOnlyList<ContextMessage> SearchHits);

/// <summary>The summary part of a context.</summary>
public sealed record ContextSummary(string Text, long FromSequence, long ToSequence, int Revision, int TokenCount);

/// <summary>A message of a context.</summary>
public sealed record ContextMessage(long Sequence, MessageRole Role, string Content, int TokenCount, DateTimeOffset CreatedAt, string? ExternalId);

/// <summary>Which part of the conversation a context represents.</summary>
/// <param name="MessageCount">Messages in the conversation.</param>
/// <param name="SummaryThrough">Last sequence the included summary covers (null without one).</param>
/// <param name="MessagesFrom">First sequence included verbatim (null when none fit).</param>
/// <param name="MessagesTo">Last sequence included verbatim.</param>
/// <param name="Complete">True when every message is either in the summary or included verbatim.</param>
public sealed record ContextCoverage(long MessageCount, long? SummaryThrough, long? MessagesFrom, long? MessagesTo, bool Complete);

/// <summary>Builds conversation contexts (cached, invalidated by every change that affects them).</summary>
public interface IConversationContexts
{
    /// <summary>The context of a conversation within <paramref name="maxTokens"/>, or null when it does not exist for this tenant.</summary>
    Task<ConversationContext?> GetAsync(string tenantId, Guid conversationId, int maxTokens, string? query = null, CancellationToken cancellationToken = default);
}
