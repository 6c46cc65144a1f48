using FluentValidation;

namespace ModularChat.Search;

/// <summary>How search ranks and what it accepts (section <c>Search</c>).</summary>
public sealed class SearchOptions
{
    public const string Section = "Search";

    /// <summary>PostgreSQL text-search configuration for stemming and stop words ("english", "simple", "german"...). Changing it needs a projection rebuild.</summary>
    public string Language { get; set; } = "english";

    /// <summary>
    /// How long the tombstone of a deleted conversation is kept: while it exists, late events cannot bring the conversation
    /// back into the read model and every node drops its vectors from memory. At least <c>VectorIndex:IdleEviction</c>, so a
    /// node that has not refreshed a tenant's vectors since the deletion evicts them before the tombstone goes.
    /// </summary>
    public TimeSpan TombstoneLifetime { get; set; } = TimeSpan.FromHours(1);

    /// <summary>
    /// The most events (the event store's high-water mark) a rebuild through <c>POST /api/admin/search/rebuild</c> may replay;
    /// 0: no limit. Such a rebuild empties the read model and must replay within the event store's 5 minutes (JasperFx's
    /// shard timeout, which Wolverine's rebuild does not let the caller set): one that runs out of time is reported failed
    /// with the read model half rebuilt. A larger store is rebuilt with the CLI and <c>--shard-timeout</c>. The default is
    /// half of what the development machine replayed in 5 minutes (~6,600 messages a second).
    /// </summary>
    public long MaxOnlineRebuildEvents { get; set; } = 1_000_000;

    /// <summary>
    /// The most unread events of the caller's tenant <c>GET /api/search/status</c> counts as its <c>indexingLag</c>: a
    /// larger lag is reported as this figure. Every status call reads up to this many entries of an index, so a client
    /// polling while its tenant imports a long history does not make each call read the whole backlog.
    /// </summary>
    public int MaxCountedIndexingLag { get; set; } = 10_000;

    /// <summary>Hits returned when the request gives no k.</summary>
    public int DefaultResults { get; set; } = 10;

    /// <summary>Largest k a request may ask for (422 beyond).</summary>
    public int MaxResults { get; set; } = 100;

    /// <summary>Longest query, in characters (422 beyond).</summary>
    public int MaxQueryLength { get; set; } = 1000;

    /// <summary>
    /// Most conversations a <c>conversationMetadata</c> filter may match (422 beyond, asking for a narrower filter): their
    /// ids go into the search's statements and select the in-memory vectors conversation by conversation.
    /// </summary>
    public int MaxFilteredConversations { get; set; } = 10_000;

    /// <summary>
    /// Budget of entries a keyword search reads: entries are fetched through the query's rarest words while their expected
    /// number stays within it (the rarest word is always used), so common words cannot make a search read half the tenant.
    /// Matches beyond it (a query of everyday words only) are scored, and only this many of the best go on to ranking.
    /// </summary>
    public int MaxKeywordCandidates { get; set; } = 2000;

    /// <summary>Candidates each list (keyword, semantic) contributes to the fusion.</summary>
    public int CandidatesPerList { get; set; } = 100;

    /// <summary>Weight of the keyword list in reciprocal rank fusion.</summary>
    public double KeywordWeight { get; set; } = 1.0;

    /// <summary>Weight of the semantic list in reciprocal rank fusion when the tenant embeds with a language model (OpenAI-compatible endpoint).</summary>
    public double SemanticWeight { get; set; } = 1.0;

    /// <summary>
    /// Weight of the semantic list when the tenant uses the built-in embedder: its similarity is mostly lexical and overlaps the
    /// keyword list, so it refines rather than leads.
    /// </summary>
    public double BuiltInSemanticWeight { get; set; } = 0.4;

    /// <summary>The k of reciprocal rank fusion: 1 / (k + rank). Larger values flatten the head of each list.</summary>
    public int RrfK { get; set; } = 20;

    /// <summary>BM25 term-saturation parameter of the keyword ranking.</summary>
    public double Bm25K1 { get; set; } = 1.2;

    /// <summary>BM25 length normalization of the keyword ranking (0 = none, 1 = full).</summary>
    public double Bm25B { get; set; } = 0.4;

    /// <summary>
    /// Share of the previous turn's score a message inherits: an answer often does not repeat the words of the
    /// question it answers. 0 turns neighbouring-turn context off.
    /// </summary>
    public double PreviousTurnWeight { get; set; } = 0.5;

    /// <summary>Share of the next turn's score a message inherits (a question whose answer matches).</summary>
    public double NextTurnWeight { get; set; } = 0.25;

    /// <summary>Recency prior: a brand-new entry's score is multiplied by (1 + weight), halving with each half-life of age. 0 turns it off.</summary>
    public double RecencyWeight { get; set; } = 0.1;

    /// <summary>Half-life of the recency prior, in days.</summary>
    public double RecencyHalfLifeDays { get; set; } = 30;

    /// <summary>Default MMR diversity (0 = off, up to 1): trades relevance for hits unlike the ones already chosen. Requests may override it.</summary>
    public double Diversity { get; set; }

    /// <summary>Metadata keys whose value names the speaker of a message; the speaker is indexed with the text (first key found wins).</summary>
    public string[]? SpeakerMetadataKeys { get; set; }

    /// <summary>Most neighbouring turns a request may ask to be returned around each hit.</summary>
    public int MaxContextTurns { get; set; } = 5;

    /// <summary>Most related conversations a request may ask for.</summary>
    public int MaxRelatedResults { get; set; } = 50;

    /// <summary>Weight of a conversation's latest summary against the mean of its messages when comparing conversations.</summary>
    public double RelatedSummaryWeight { get; set; } = 1.0;

    public SearchEmbeddingOptions Embeddings { get; set; } = new();

    public VectorIndexOptions VectorIndex { get; set; } = new();

    internal IReadOnlyList<string> SpeakerKeys => SpeakerMetadataKeys is { Length: > 0 } keys ? keys : ["speaker", "name", "author"];
}

/// <summary>How entries are embedded (section <c>Search:Embeddings</c>).</summary>
public sealed class SearchEmbeddingOptions
{
    /// <summary>Whether this node runs the background embedding worker (every node may; they share the queue safely).</summary>
    public bool WorkerEnabled { get; set; } = true;

    /// <summary>Dimensions of the built-in hashed embedder (part of its model id: changing it re-embeds everything).</summary>
    public int BuiltInDimensions { get; set; } = 1024;

    /// <summary>Entries embedded per call to the generator.</summary>
    public int BatchSize { get; set; } = 64;

    /// <summary>
    /// Most tenants whose entries one node embeds at once, each with its own model. A tenant is embedded by one claim at a
    /// time on a node, and the next claims go to other tenants' entries: one tenant's slow model (or large backlog) holds
    /// one of these, not the others' search.
    /// </summary>
    public int MaxConcurrentTenants { get; set; } = 4;

    /// <summary>
    /// The most o200k tokens of an entry's text that are embedded (the rest is left out of its vector, not of keyword
    /// search); below the input limit of the models in use (many local ones take 512).
    /// </summary>
    public int MaxInputTokens { get; set; } = 2000;

    /// <summary>How often the worker looks for work when the queue was empty.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>How often every tenant's embedding model is compared with the one its vectors were made with.</summary>
    public TimeSpan ModelCheckInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>First wait before retrying entries whose embedding failed (doubles per attempt, at most one hour).</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// The attempt at which an entry whose text the model refuses on its own (HTTP 400, 413, 422 for it alone) is given up:
    /// it is no longer retried and stays out of semantic search (keyword search finds it) until it is queued again (the
    /// tenant's model changes, or search is rebuilt). A model that fails as a whole (an error, a rate limit, no answer, or
    /// a refusal of every text) is retried without end: no one entry is at fault.
    /// </summary>
    public int MaxRefusedAttempts { get; set; } = 10;

    /// <summary>
    /// Optional OpenAI-compatible embeddings endpoint (OpenAI, Ollama, vLLM...) for tenants without a provider of their
    /// own, e.g. http://localhost:11434/v1. Empty: the built-in embedder.
    /// </summary>
    public string? Endpoint { get; set; }

    /// <summary>The model of <see cref="Endpoint"/>, e.g. text-embedding-3-small or nomic-embed-text.</summary>
    public string? Model { get; set; }

    /// <summary>API key of <see cref="Endpoint"/> (servers that need none accept any value).</summary>
    public string? ApiKey { get; set; }
}

/// <summary>How vectors are stored and held in memory for nearest-neighbour search (section <c>Search:VectorIndex</c>).</summary>
public sealed class VectorIndexOptions
{
    /// <summary>
    /// How vectors are stored in PostgreSQL and held in memory. Int8: 1 byte per dimension (a quarter of float32, same
    /// recall here, and cheaper to write); Float32: exact cosine on the model's floats. Either format is read; when an entry
    /// is next queued (a rebuild queues them all), a float32 vector is quantized to int8 without calling the model, and an
    /// int8 one is embedded again under Float32 (its floats cannot be recovered).
    /// </summary>
    public VectorPrecision Precision { get; set; } = VectorPrecision.Int8;

    /// <summary>How stale a node's copy of a tenant's vectors may be before a search catches up with PostgreSQL.</summary>
    public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>A tenant's vectors leave memory after this long without a search.</summary>
    public TimeSpan IdleEviction { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>Memory budget of all tenants' vectors on one node; the least recently used tenants leave memory beyond it.</summary>
    public int MaxMemoryMegabytes { get; set; } = 2048;
}

/// <summary>How vectors are stored and held in memory.</summary>
public enum VectorPrecision
{
    /// <summary>8-bit scalar quantization per vector (default).</summary>
    Int8,

    /// <summary>Full single precision.</summary>
    Float32,
}

internal sealed class SearchOptionsValidator : AbstractValidator<SearchOptions>
{
    public SearchOptionsValidator()
    {
        RuleFor(o => o.Language).Matches("^[a-z_][a-z0-9_]*$").WithMessage("must be the name of a PostgreSQL text-search configuration, e.g. 'english'.");
        RuleFor(o => o.MaxResults).InclusiveBetween(1, 1000);
        RuleFor(o => o.DefaultResults).GreaterThan(0).LessThanOrEqualTo(o => o.MaxResults).WithMessage("must be between 1 and MaxResults.");
        RuleFor(o => o.MaxQueryLength).InclusiveBetween(1, 100_000);
        RuleFor(o => o.MaxFilteredConversations).InclusiveBetween(1, 1_000_000);
        RuleFor(o => o.MaxCountedIndexingLag).InclusiveBetween(1, 10_000_000);
        RuleFor(o => o.CandidatesPerList).InclusiveBetween(1, 10_000);
        RuleFor(o => o.MaxKeywordCandidates).InclusiveBetween(1, 10_000_000);
        RuleFor(o => o.KeywordWeight).InclusiveBetween(0, 100);
        RuleFor(o => o.SemanticWeight).InclusiveBetween(0, 100);
        RuleFor(o => o.BuiltInSemanticWeight).InclusiveBetween(0, 100);
        RuleFor(o => o.RrfK).InclusiveBetween(0, 10_000);
        RuleFor(o => o.Bm25K1).InclusiveBetween(0, 10);
        RuleFor(o => o.Bm25B).InclusiveBetween(0, 1);
        RuleFor(o => o.PreviousTurnWeight).InclusiveBetween(0, 1);
        RuleFor(o => o.NextTurnWeight).InclusiveBetween(0, 1);
        RuleFor(o => o.RecencyWeight).InclusiveBetween(0, 10);
        RuleFor(o => o.RecencyHalfLifeDays).GreaterThan(0);
        RuleFor(o => o.Diversity).InclusiveBetween(0, 1);
        RuleFor(o => o.MaxContextTurns).InclusiveBetween(0, 50);
        RuleFor(o => o.MaxRelatedResults).InclusiveBetween(1, 1000);
        RuleFor(o => o.RelatedSummaryWeight).InclusiveBetween(0, 100);
        RuleForEach(o => o.SpeakerMetadataKeys).NotEmpty();
        RuleFor(o => o.Embeddings.BuiltInDimensions).InclusiveBetween(64, 8192).OverridePropertyName("Embeddings:BuiltInDimensions");
        RuleFor(o => o.Embeddings.BatchSize).InclusiveBetween(1, 2048).OverridePropertyName("Embeddings:BatchSize");
        RuleFor(o => o.Embeddings.MaxConcurrentTenants).InclusiveBetween(1, 64).OverridePropertyName("Embeddings:MaxConcurrentTenants");
        RuleFor(o => o.Embeddings.MaxInputTokens).InclusiveBetween(64, 100_000).OverridePropertyName("Embeddings:MaxInputTokens");
        RuleFor(o => o.Embeddings.PollInterval).GreaterThan(TimeSpan.Zero).OverridePropertyName("Embeddings:PollInterval");
        RuleFor(o => o.Embeddings.ModelCheckInterval).GreaterThan(TimeSpan.Zero).OverridePropertyName("Embeddings:ModelCheckInterval");
        RuleFor(o => o.Embeddings.RetryDelay).GreaterThan(TimeSpan.Zero).OverridePropertyName("Embeddings:RetryDelay");
        RuleFor(o => o.Embeddings.MaxRefusedAttempts).InclusiveBetween(1, 1000).OverridePropertyName("Embeddings:MaxRefusedAttempts");
        RuleFor(o => o.Embeddings.Endpoint).Must(e => Uri.TryCreate(e, UriKind.Absolute, out var u) && u.Scheme is "http" or "https")
            .When(o => !string.IsNullOrWhiteSpace(o.Embeddings.Endpoint))
            .WithMessage("must be an absolute http(s) URL such as http://localhost:11434/v1.").OverridePropertyName("Embeddings:Endpoint");
        RuleFor(o => o.Embeddings.Model).NotEmpty().When(o => !string.IsNullOrWhiteSpace(o.Embeddings.Endpoint))
            .WithMessage("is required when Embeddings:Endpoint is set.").OverridePropertyName("Embeddings:Model");
        RuleFor(o => o.VectorIndex.RefreshInterval).GreaterThanOrEqualTo(TimeSpan.Zero).OverridePropertyName("VectorIndex:RefreshInterval");
        RuleFor(o => o.VectorIndex.IdleEviction).GreaterThan(TimeSpan.Zero).OverridePropertyName("VectorIndex:IdleEviction");
        RuleFor(o => o.MaxOnlineRebuildEvents).GreaterThanOrEqualTo(0);
        RuleFor(o => o.TombstoneLifetime).GreaterThanOrEqualTo(o => o.VectorIndex.IdleEviction)
            .WithMessage("must be at least VectorIndex:IdleEviction (a node may still hold the deleted conversation's vectors until then).");
        RuleFor(o => o.VectorIndex.MaxMemoryMegabytes).InclusiveBetween(1, 1_000_000).OverridePropertyName("VectorIndex:MaxMemoryMegabytes");
    }
}
