using ModularChat.Search.Contracts;
using ModularChat.Search.Searching;
using ModularChat.Search.Storage;
using Npgsql;

namespace ModularChat.Search;

/// <summary>The Search module's side of <see cref="IConversationSearch"/>: the hybrid ranking restricted to one conversation's messages.</summary>
internal sealed class ConversationSearch(HybridSearch search, SearchDatabase database) : IConversationSearch
{
    public async Task<IReadOnlyList<ConversationSearchHit>> SearchAsync(ConversationSearchRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(request.TenantId);
        if (string.IsNullOrWhiteSpace(request.Query) || request.Limit <= 0)
        {
            return [];
        }

        var filter = new SearchFilter(request.ConversationId, SearchScope.Messages,
            ExcludeFromSequence: request.ExcludeFromSequence ?? (request.ExcludeToSequence is null ? null : long.MinValue),
            ExcludeToSequence: request.ExcludeToSequence ?? (request.ExcludeFromSequence is null ? null : long.MaxValue));
        var ranking = await search.RankAsync(
            new SearchCriteria(request.TenantId, QueryText.Clean(request.Query), request.Limit, SearchMode.Hybrid, filter, Diversity: 0), cancellationToken);
        if (ranking.Entries.Count == 0)
        {
            return [];
        }

        var sequences = new Dictionary<Guid, long>(ranking.Entries.Count);
        await using (var connection = await database.OpenAsync(cancellationToken))
        await using (var command = new NpgsqlCommand(
            $"select e.id, e.sequence from {database.Schema.EntriesById(1, 2)} where e.kind = 0", connection))
        {
            command.Parameters.Add(new NpgsqlParameter { Value = request.TenantId });
            command.Parameters.Add(new NpgsqlParameter { Value = ranking.Entries.Select(e => e.Id).ToArray() });
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                sequences[reader.GetGuid(0)] = reader.GetInt64(1);
            }
        }

        return ranking.Entries
            .Where(e => sequences.ContainsKey(e.Id))
            .Select(e => new ConversationSearchHit(e.Id, sequences[e.Id], e.Score))
            .ToList();
    }
}
