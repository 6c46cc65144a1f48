namespace ModularChat.Search.Contracts;

/// <summary>A search inside one conversation, as another module asks for it (e.g. to add relevant older turns to a chat context).</summary>
/// <param name="TenantId">The tenant the conversation belongs to.</param>
/// <param name="ConversationId">The conversation to search.</param>
/// <param name="Query">Natural-language text (typically the user's latest message).</param>
/// <param name="Limit">How many hits at most.</param>
/// <param name="ExcludeFromSequence">With <paramref name="ExcludeToSequence"/>: messages in this inclusive range are left out (e.g. the recent turns the caller already has).</param>
/// <param name="ExcludeToSequence">End of the excluded range (inclusive).</param>
public sealed record ConversationSearchRequest(
    string TenantId,
    Guid ConversationId,
    string Query,
    int Limit,
    long? ExcludeFromSequence = null,
    long? ExcludeToSequence = null);

/// <summary>One message found by <see cref="IConversationSearch"/>.</summary>
/// <param name="MessageId">The message's id.</param>
/// <param name="Sequence">The message's sequence in its conversation.</param>
/// <param name="Score">Relevance under the hybrid ranking: higher is better; comparable only within one answer.</param>
public sealed record ConversationSearchHit(Guid MessageId, long Sequence, double Score);

/// <summary>
/// Hybrid (keyword + semantic) search over one conversation's messages, provided by the Search module.
/// Search read models are built asynchronously: messages appended a moment ago may not be found yet.
/// </summary>
public interface IConversationSearch
{
    /// <summary>The best-matching messages of the conversation, best first; empty when nothing matches or the conversation is unknown to the tenant.</summary>
    Task<IReadOnlyList<ConversationSearchHit>> SearchAsync(ConversationSearchRequest request, CancellationToken cancellationToken = default);
}
