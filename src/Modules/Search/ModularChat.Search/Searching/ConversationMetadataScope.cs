using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Search.Searching;

/// <summary>
/// The conversations a <c>conversationMetadata</c> filter selects (<c>key=value</c>, every pair must match), as the
/// Conversations module has them at the moment: search entries carry only their message's own metadata.
/// </summary>
internal sealed class ConversationMetadataScope(IConversationMessages conversations, IOptions<SearchOptions> options)
{
    /// <summary>The matching conversations' ids (422 past <see cref="SearchOptions.MaxFilteredConversations"/>).</summary>
    public async Task<IReadOnlyList<Guid>> MatchingAsync(string tenantId, IEnumerable<string> filters, CancellationToken cancellationToken)
    {
        var max = options.Value.MaxFilteredConversations;
        var ids = await conversations.FindIdsByMetadataAsync(tenantId, KeyValueFilters.Pairs(filters), max + 1, cancellationToken);
        if (ids.Count > max)
        {
            throw new LimitExceededException("conversationMetadata",
                $"'conversationMetadata' matches more than {max} conversations (Search:MaxFilteredConversations): " +
                "narrow it with another pair (a search may also name one conversation with conversationId).");
        }

        return ids;
    }

    /// <summary>Whether one conversation's metadata holds every pair (false when it does not exist for the tenant).</summary>
    public async Task<bool> MatchesAsync(string tenantId, Guid conversationId, IEnumerable<string> filters, CancellationToken cancellationToken)
    {
        var conversation = await conversations.FindAsync(tenantId, conversationId, cancellationToken);
        return conversation is not null
               && KeyValueFilters.Pairs(filters).All(p => conversation.Metadata.TryGetValue(p.Key, out var value) && string.Equals(value, p.Value, StringComparison.Ordinal));
    }
}
