using ModularChat.Search.Storage;

namespace ModularChat.Search.Vectors;

/// <summary>Which vectors a nearest-neighbour search may return (neighbouring turns still lend their scores as context).</summary>
internal sealed record VectorFilter(
    Guid? ConversationId = null,
    EntryKind? Kind = null,
    string? Role = null,
    DateTimeOffset? From = null,
    DateTimeOffset? To = null,
    IReadOnlySet<Guid>? AllowedIds = null,
    long? ExcludeFromSequence = null,
    long? ExcludeToSequence = null,
    IReadOnlyCollection<Guid>? ConversationIds = null);

/// <summary>A nearest-neighbour query: a unit-length vector, a filter, how many, and how much neighbouring turns add.</summary>
internal sealed record VectorQuery(float[] Vector, VectorFilter Filter, int Limit, float PreviousTurnWeight, float NextTurnWeight);

/// <summary>An entry found by vector search with its (context-smoothed) cosine similarity.</summary>
internal sealed record VectorCandidate(Guid EntryId, double Score, DateTimeOffset CreatedAt);

/// <summary>A conversation similar to another one.</summary>
internal sealed record RelatedConversationScore(Guid ConversationId, double Score);

/// <summary>What a node holds in memory.</summary>
internal sealed record VectorIndexStatistics(int Tenants, long Vectors, long Bytes);

/// <summary>
/// Nearest-neighbour search over one tenant's entry vectors of one embedding model. PostgreSQL is the source of
/// truth; implementations read from it (the in-process index keeps a refreshed copy in memory and scans it exactly;
/// where the pgvector extension exists, an implementation can query it instead behind the same interface).
/// </summary>
internal interface IVectorIndex
{
    /// <summary>The best candidates, best first.</summary>
    Task<IReadOnlyList<VectorCandidate>> SearchAsync(string tenantId, string model, VectorQuery query, CancellationToken cancellationToken);

    /// <summary>Inverse document frequencies of <paramref name="termIds"/> among the tenant's embedded entries (for weighting query words).</summary>
    Task<float[]> InverseDocumentFrequenciesAsync(string tenantId, string model, IReadOnlyList<int> termIds, CancellationToken cancellationToken);

    /// <summary>Stored unit vectors of the given entries (those that have one).</summary>
    Task<IReadOnlyDictionary<Guid, float[]>> GetVectorsAsync(string tenantId, string model, IReadOnlyCollection<Guid> entryIds, CancellationToken cancellationToken);

    /// <summary>
    /// The tenant's conversations most similar to <paramref name="conversationId"/> (centroids of messages and latest
    /// summary), among <paramref name="among"/> only when given.
    /// </summary>
    Task<IReadOnlyList<RelatedConversationScore>> RelatedAsync(
        string tenantId, string model, Guid conversationId, int limit, float summaryWeight, CancellationToken cancellationToken,
        IReadOnlySet<Guid>? among = null);

    /// <summary>Number of vectors of the model the index holds for the tenant.</summary>
    Task<int> CountAsync(string tenantId, string model, CancellationToken cancellationToken);

    VectorIndexStatistics Statistics();
}
