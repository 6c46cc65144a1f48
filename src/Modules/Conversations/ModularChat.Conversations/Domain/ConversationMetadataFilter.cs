using System.Text.Json;
using Marten.Linq.MatchesSql;

namespace ModularChat.Conversations.Domain;

/// <summary>Conversations whose metadata holds given pairs: containment, which the metadata's GIN index serves (<see cref="Conversation.ConfigureMarten"/>).</summary>
internal static class ConversationMetadataFilter
{
    /// <summary>Keeps the conversations whose metadata holds every pair (two values for one key: none).</summary>
    public static IQueryable<Conversation> WithMetadata(this IQueryable<Conversation> conversations, IEnumerable<KeyValuePair<string, string>> metadata)
    {
        foreach (var (key, value) in metadata.Distinct())
        {
            var pair = JsonSerializer.Serialize(new Dictionary<string, string> { [key] = value });
            conversations = conversations.Where(c => c.MatchesSql("d.data -> 'Metadata' @> ?::jsonb", pair));
        }

        return conversations;
    }
}
