using System.Collections.Concurrent;
using System.Numerics.Tensors;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Search.Embeddings;
using ModularChat.Search.Vectors;

namespace ModularChat.Search.Searching;

/// <summary>
/// Runs a search: the keyword list (PostgreSQL full-text, BM25) and the semantic list (embedding similarity over the
/// tenant's vectors) in parallel, fused by weighted reciprocal rank fusion, multiplied by a recency prior, and
/// optionally re-ordered for diversity (MMR). Both lists give each message a share of its neighbouring turns'
/// scores. Every list is restricted to the caller's tenant by construction (tenant id in every query and in the
/// key of the in-memory index).
/// </summary>
internal sealed partial class HybridSearch(
    KeywordSearch keyword,
    IVectorIndex vectors,
    TenantEmbedders embedders,
    EmbeddingWorker worker,
    IOptions<SearchOptions> options,
    TimeProvider clock,
    ILogger<HybridSearch> logger)
{
    private readonly ConcurrentDictionary<(string TenantId, string Model, string Query), float[]> _queryEmbeddings = new();

    public async Task<SearchRanking> RankAsync(SearchCriteria criteria, CancellationToken cancellationToken)
    {
        using var activity = ModularChatTelemetry.ActivitySource.StartActivity("search.rank");
        activity?.SetTag("search.mode", criteria.Mode.ToString());
        var o = options.Value;
        var candidates = Math.Max(o.CandidatesPerList, criteria.Limit * (criteria.Diversity > 0 ? 5 : 1));
        var keywordTask = criteria.Mode == SearchMode.Semantic || criteria.Filter.ConversationIds is { Count: 0 }
            ? Task.FromResult<IReadOnlyList<KeywordCandidate>>([])
            : keyword.SearchAsync(criteria.TenantId, criteria.Query, criteria.Filter, candidates, cancellationToken);
        var semanticTask = criteria.Mode == SearchMode.Keyword
            ? Task.FromResult(new SemanticList([], null, null, false))
            : SemanticAsync(criteria, candidates, cancellationToken);
        await Task.WhenAll(keywordTask, semanticTask);
        var keywordHits = await keywordTask;
        var semantic = await semanticTask;

        var fused = new Dictionary<Guid, Fused>();
        var now = clock.GetUtcNow();
        for (var i = 0; i < keywordHits.Count; i++)
        {
            var hit = keywordHits[i];
            var score = criteria.Mode == SearchMode.Keyword ? hit.Score : o.KeywordWeight / (o.RrfK + i + 1);
            fused[hit.EntryId] = new Fused(score, hit.CreatedAt, i + 1, null);
        }

        var semanticWeight = semantic.BuiltIn ? o.BuiltInSemanticWeight : o.SemanticWeight;
        for (var i = 0; i < semantic.Candidates.Count; i++)
        {
            var hit = semantic.Candidates[i];
            var score = criteria.Mode == SearchMode.Semantic ? hit.Score : semanticWeight / (o.RrfK + i + 1);
            fused[hit.EntryId] = fused.TryGetValue(hit.EntryId, out var existing)
                ? existing with { Score = existing.Score + score, SemanticRank = i + 1 }
                : new Fused(score, hit.CreatedAt, null, i + 1);
        }

        var ranked = fused
            .Select(f => new RankedEntry(f.Key, f.Value.Score * Recency(now, f.Value.CreatedAt, o), f.Value.KeywordRank, f.Value.SemanticRank))
            .OrderByDescending(r => r.Score)
            .ThenBy(r => r.Id)
            .ToList();

        if (criteria.Diversity > 0 && ranked.Count > 1 && semantic.Model is not null)
        {
            ranked = await DiversifyAsync(criteria, semantic.Model, ranked, cancellationToken);
        }

        return new SearchRanking(ranked.Take(criteria.Limit).ToList(), semantic.Model, semantic.Problem);
    }

    /// <summary>(1 + weight) for a brand-new entry, halving with each half-life of age.</summary>
    private static double Recency(DateTimeOffset now, DateTimeOffset createdAt, SearchOptions o)
    {
        if (o.RecencyWeight <= 0)
        {
            return 1;
        }

        var ageDays = Math.Max(0, (now - createdAt).TotalDays);
        return 1 + o.RecencyWeight * Math.Pow(0.5, ageDays / o.RecencyHalfLifeDays);
    }

    private async Task<SemanticList> SemanticAsync(SearchCriteria criteria, int limit, CancellationToken cancellationToken)
    {
        var o = options.Value;
        TenantEmbedder? embedder = null;
        float[] query;
        try
        {
            embedder = await embedders.ForTenantAsync(criteria.TenantId, cancellationToken);
            worker.NoteModelInUse(criteria.TenantId, embedder.Model);
            if (criteria.Filter.ConversationIds is { Count: 0 })
            {
                return new SemanticList([], embedder.Model, null, embedder.BuiltIn is not null); // no conversation to look in: the query is not embedded
            }

            query = await EmbedQueryAsync(criteria.TenantId, criteria.Query, embedder, cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // The tenant's embedding service (or its provider settings) failed: answer with the keyword list rather than an error.
            LogQueryEmbeddingFailed(logger, criteria.TenantId, embedder?.Model ?? "(unknown)", e.GetType().Name, e.Message);
            var problem = e is UnusableQueryVectorException
                ? "The embedding service answered the query with an unusable vector (numbers out of range, or none); results are keyword matches only."
                : "The embedding service failed to embed the query; results are keyword matches only.";
            return new SemanticList([], embedder?.Model, problem, false);
        }

        var filter = criteria.Filter;
        IReadOnlySet<Guid>? allowed = null;
        if (filter.Metadata is { Count: > 0 } metadata)
        {
            allowed = await keyword.WithMetadataAsync(criteria.TenantId, metadata, cancellationToken);
            if (allowed.Count == 0)
            {
                return new SemanticList([], embedder.Model, null, embedder.BuiltIn is not null);
            }
        }

        var vectorFilter = new VectorFilter(filter.ConversationId, filter.Kind, filter.Role, filter.From, filter.To, allowed,
            filter.ExcludeFromSequence, filter.ExcludeToSequence, filter.ConversationIds);
        var candidates = await vectors.SearchAsync(criteria.TenantId, embedder.Model,
            new VectorQuery(query, vectorFilter, limit, (float)o.PreviousTurnWeight, (float)o.NextTurnWeight), cancellationToken);
        return new SemanticList(candidates, embedder.Model, null, embedder.BuiltIn is not null);
    }

    /// <summary>
    /// The query's unit vector. With the built-in embedder, each query word is weighted by its rarity among the tenant's
    /// entries (inverse document frequency), so "Caroline" in a tenant where she speaks every other turn counts for less
    /// than "adoption"; other models embed the text as it is (cached: users repeat searches). The cache is the tenant's:
    /// a provider's model id names the provider only as the tenant named it, so two tenants' "openai" may be two
    /// endpoints, and one tenant's endpoint must neither answer for another nor learn what another searched.
    /// </summary>
    private async Task<float[]> EmbedQueryAsync(string tenantId, string text, TenantEmbedder embedder, CancellationToken cancellationToken)
    {
        if (embedder.BuiltIn is { } builtIn)
        {
            var stems = TextAnalyzer.Tokens(text).Select(TextAnalyzer.Stem).Distinct(StringComparer.Ordinal).ToArray();
            var idf = await vectors.InverseDocumentFrequenciesAsync(tenantId, embedder.Model, stems.Select(TextAnalyzer.TermId).ToArray(), cancellationToken);
            var weights = new Dictionary<string, float>(StringComparer.Ordinal);
            for (var i = 0; i < stems.Length; i++)
            {
                weights[stems[i]] = idf[i];
            }

            return builtIn.Embed(text, stem => weights.GetValueOrDefault(stem, 1f));
        }

        if (_queryEmbeddings.TryGetValue((tenantId, embedder.Model, text), out var cached))
        {
            return cached;
        }

        var embedding = await embedder.Generator.GenerateAsync([text], cancellationToken: cancellationToken);
        var vector = embedding[0].Vector.ToArray();
        VectorMath.Normalize(vector);
        if (vector.Length == 0 || !vector.All(float.IsFinite) || vector.All(v => v == 0))
        {
            // As the worker refuses such a vector for an entry: a number past a float's range (infinite) made every score NaN.
            throw new UnusableQueryVectorException($"The embedding model returned an invalid vector for the query ({vector.Length} dimensions, not all finite or all zero).");
        }

        if (_queryEmbeddings.Count > 1000)
        {
            _queryEmbeddings.Clear();
        }

        _queryEmbeddings[(tenantId, embedder.Model, text)] = vector;
        return vector;
    }

    /// <summary>Maximal marginal relevance: each next hit maximizes (1 - d) * relevance - d * its highest similarity to the hits already chosen.</summary>
    private async Task<List<RankedEntry>> DiversifyAsync(SearchCriteria criteria, string model, List<RankedEntry> ranked, CancellationToken cancellationToken)
    {
        var pool = ranked.Take(Math.Max(criteria.Limit * 5, 50)).ToList();
        var stored = await vectors.GetVectorsAsync(criteria.TenantId, model, pool.Select(r => r.Id).ToArray(), cancellationToken);
        var top = pool[0].Score;
        var chosen = new List<RankedEntry>(criteria.Limit);
        var maxSimilarity = new double[pool.Count];
        var taken = new bool[pool.Count];
        var d = criteria.Diversity;
        while (chosen.Count < Math.Min(criteria.Limit, pool.Count))
        {
            var best = -1;
            var bestValue = double.NegativeInfinity;
            for (var i = 0; i < pool.Count; i++)
            {
                if (taken[i])
                {
                    continue;
                }

                var value = (1 - d) * (top > 0 ? pool[i].Score / top : 0) - d * maxSimilarity[i];
                if (value > bestValue)
                {
                    bestValue = value;
                    best = i;
                }
            }

            if (best < 0)
            {
                break; // no value to compare (NaN scores): what was chosen stands
            }

            taken[best] = true;
            chosen.Add(pool[best]);
            if (stored.TryGetValue(pool[best].Id, out var picked))
            {
                for (var i = 0; i < pool.Count; i++)
                {
                    if (!taken[i] && stored.TryGetValue(pool[i].Id, out var other))
                    {
                        maxSimilarity[i] = Math.Max(maxSimilarity[i], TensorPrimitives.Dot(picked, other));
                    }
                }
            }
        }

        return chosen;
    }

    private sealed record Fused(double Score, DateTimeOffset CreatedAt, int? KeywordRank, int? SemanticRank);

    private sealed record SemanticList(IReadOnlyList<VectorCandidate> Candidates, string? Model, string? Problem, bool BuiltIn);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Embedding a search query of tenant {TenantId} with {Model} failed ({ErrorType}: {Error}); answering with keyword results only")]
    private static partial void LogQueryEmbeddingFailed(ILogger logger, string tenantId, string model, string errorType, string error);
}

/// <summary>The embedding model answered a query with a vector that cannot be searched with (empty, all zero, or not finite).</summary>
internal sealed class UnusableQueryVectorException(string message) : InvalidOperationException(message);
