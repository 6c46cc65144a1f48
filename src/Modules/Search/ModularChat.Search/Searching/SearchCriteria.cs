using ModularChat.Search.Storage;

namespace ModularChat.Search.Searching;

/// <summary>Which rankings a search uses.</summary>
public enum SearchMode
{
    /// <summary>Keyword and semantic lists fused (the default).</summary>
    Hybrid,

    /// <summary>PostgreSQL full-text search only (BM25-style ranking).</summary>
    Keyword,

    /// <summary>Embedding similarity only.</summary>
    Semantic,
}

/// <summary>What a search looks at.</summary>
public enum SearchScope
{
    /// <summary>Messages and summaries.</summary>
    All,

    /// <summary>Messages only.</summary>
    Messages,

    /// <summary>Summary revisions only.</summary>
    Summaries,
}

/// <summary>Restrictions on the hits (neighbouring turns still lend their scores as context).</summary>
internal sealed record SearchFilter(
    Guid? ConversationId = null,
    SearchScope Scope = SearchScope.All,
    string? Role = null,
    DateTimeOffset? From = null,
    DateTimeOffset? To = null,
    IReadOnlyDictionary<string, string>? Metadata = null,
    long? ExcludeFromSequence = null,
    long? ExcludeToSequence = null,
    IReadOnlyCollection<Guid>? ConversationIds = null)
{
    public EntryKind? Kind => Scope switch
    {
        SearchScope.Messages => EntryKind.Message,
        SearchScope.Summaries => EntryKind.Summary,
        _ => null,
    };
}

/// <summary>One search as the engine runs it.</summary>
internal sealed record SearchCriteria(string TenantId, string Query, int Limit, SearchMode Mode, SearchFilter Filter, double Diversity);

/// <summary>An entry in the final ranking, with where it stood in each list (1-based).</summary>
internal sealed record RankedEntry(Guid Id, double Score, int? KeywordRank, int? SemanticRank);

/// <summary>The ranking and what happened to the semantic side.</summary>
/// <param name="SemanticModel">The embedding model of the tenant.</param>
/// <param name="SemanticProblem">Why the semantic list is missing, when it is (the embedding service failed).</param>
internal sealed record SearchRanking(IReadOnlyList<RankedEntry> Entries, string? SemanticModel, string? SemanticProblem);

/// <summary>Query text as PostgreSQL accepts it.</summary>
internal static class QueryText
{
    /// <summary>Control characters (NUL above all, which PostgreSQL text cannot hold) become spaces.</summary>
    public static string Clean(string text)
        => text.AsSpan().ContainsAnyInRange('\0', '\u001f') ? string.Create(text.Length, text, (span, source) =>
        {
            for (var i = 0; i < source.Length; i++)
            {
                span[i] = char.IsControl(source[i]) ? ' ' : source[i];
            }
        }) : text;
}
