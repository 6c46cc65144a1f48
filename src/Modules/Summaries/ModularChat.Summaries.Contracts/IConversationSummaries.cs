namespace ModularChat.Summaries.Contracts;

/// <summary>A conversation's current summary, as other modules read it.</summary>
/// <param name="Text">The summary text.</param>
/// <param name="FromSequence">First message sequence the summary covers (1 for a full summary).</param>
/// <param name="ToSequence">Last message sequence the summary covers: messages after it are not in the summary.</param>
/// <param name="Revision">1 for the first summary, then one more per revision.</param>
/// <param name="TokenCount">Length of <paramref name="Text"/> in o200k tokens.</param>
public sealed record ConversationSummary(
    Guid ConversationId,
    string Text,
    long FromSequence,
    long ToSequence,
    int Revision,
    int TokenCount,
    DateTimeOffset RevisedAt);

/// <summary>How other modules read summaries without touching the Summaries module's storage.</summary>
public interface IConversationSummaries
{
    /// <summary>The current summary, or null when the conversation has none yet (or does not exist for this tenant).</summary>
    Task<ConversationSummary?> GetCurrentAsync(string tenantId, Guid conversationId, CancellationToken cancellationToken = default);
}
