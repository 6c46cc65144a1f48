using Marten;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Summaries.Contracts;
using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries;

/// <summary>The Summaries module's side of <see cref="IConversationSummaries"/>: the current summary from its projection.</summary>
internal sealed class ConversationSummaries(IDocumentStore store, ITokenCounter tokens) : IConversationSummaries
{
    public async Task<ConversationSummary?> GetCurrentAsync(string tenantId, Guid conversationId, CancellationToken cancellationToken = default)
    {
        await using var session = store.QuerySession(tenantId);
        var v = await session.LoadAsync<SummaryView>(conversationId, cancellationToken);
        return v is null ? null : new ConversationSummary(v.Id, v.Text, v.FromSequence, v.ToSequence, v.Revision, tokens.Count(v.Text), v.RevisedAt);
    }
}
