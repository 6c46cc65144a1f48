using System.Diagnostics;
using FluentValidation;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Tenancy;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Search.Projection;
using ModularChat.Search.Searching;
using ModularChat.Search.Storage;

namespace ModularChat.Search.Features.Search;

/// <summary>The semantic side of a search: the tenant's embedding model and whether it answered.</summary>
/// <param name="Problem">Why semantic results are missing, when they are.</param>
public sealed record SemanticStatus(string? Model, bool Available, string? Problem);

/// <summary>One search hit.</summary>
/// <param name="Id">The entry's id: the message id for a message, a stable id for a summary revision.</param>
/// <param name="Kind">"message" or "summary".</param>
/// <param name="Sequence">The message's sequence in its conversation (null for a summary).</param>
/// <param name="CreatedAt">
/// When the message was written (a summary: when it was revised), with the offset it was written with, as
/// <c>GET /api/conversations/{id}/messages</c> gives it (UTC for entries indexed before offsets were kept).
/// </param>
/// <param name="Snippet">The best fragments of the text, plain.</param>
/// <param name="Highlights">Where the query's words are in <paramref name="Snippet"/>.</param>
/// <param name="HighlightedSnippet">The snippet HTML-escaped, with the query's words in &lt;mark&gt; tags.</param>
/// <param name="Score">The hit's score under the mode used: higher is better, comparable within one answer only.</param>
/// <param name="KeywordRank">Its rank in the keyword list (1 = best), when it was in it.</param>
/// <param name="SemanticRank">Its rank in the semantic list, when it was in it.</param>
/// <param name="FromSequence">A summary's first covered message.</param>
/// <param name="ToSequence">A summary's last covered message.</param>
/// <param name="Before">Turns before a message hit, oldest first (when context was asked for).</param>
/// <param name="After">Turns after a message hit.</param>
public sealed record SearchHit(
    Guid Id,
    Guid ConversationId,
    string Kind,
    long? Sequence,
    string? ExternalId,
    string? Role,
    string? Speaker,
    DateTimeOffset CreatedAt,
    string Snippet,
    IReadOnlyList<Highlight> Highlights,
    string HighlightedSnippet,
    double Score,
    int? KeywordRank,
    int? SemanticRank,
    int? Revision,
    long? FromSequence,
    long? ToSequence,
    IReadOnlyDictionary<string, string>? Metadata,
    IReadOnlyList<ContextTurn>? Before,
    IReadOnlyList<ContextTurn>? After);

/// <summary>The answer of <c>GET /api/search</c>.</summary>
public sealed record SearchResponse(string Query, SearchMode Mode, SemanticStatus Semantic, IReadOnlyList<SearchHit> Hits);

internal sealed record SearchEntries(
    string? Q,
    int? K,
    Guid? ConversationId,
    string? Scope,
    string? Role,
    DateTimeOffset? From,
    DateTimeOffset? To,
    string[]? Metadata,
    string? Mode,
    double? Diversity,
    int? Context,
    string[]? ConversationMetadata = null) : IQuery<SearchResponse>
{
    public const int MaxMetadataFilters = 16;

    /// <summary>The metadata filters as pairs ("key=value", split at the first '=').</summary>
    public Dictionary<string, string> MetadataPairs()
    {
        var pairs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in KeyValueFilters.Pairs(Metadata))
        {
            pairs[QueryText.Clean(key)] = QueryText.Clean(value);
        }

        return pairs;
    }
}

internal sealed class SearchEntriesValidator : AbstractValidator<SearchEntries>
{
    public SearchEntriesValidator(IOptions<SearchOptions> options)
    {
        var o = options.Value;
        // NUL characters are dropped from the query (no stored text holds them): one of nothing else is no query.
        RuleFor(q => q.Q).Must(q => !string.IsNullOrWhiteSpace(q?.Replace("\0", "", StringComparison.Ordinal)))
            .WithMessage("'q' is required: the text to search for.");
        RuleFor(q => q.Q).Must(q => q is null || q.Length <= o.MaxQueryLength)
            .WithMessage($"'q' may be at most {o.MaxQueryLength} characters.").AsLimit();
        RuleFor(q => q.K).GreaterThan(0).WithMessage("'k' must be at least 1.");
        RuleFor(q => q.K).LessThanOrEqualTo(o.MaxResults).WithMessage($"'k' may be at most {o.MaxResults}.").AsLimit();
        RuleFor(q => q.Scope).Must(s => s is null || EnumNames.TryParse<SearchScope>(s, out _))
            .WithMessage("'scope' must be 'messages', 'summaries' or 'all'.");
        RuleFor(q => q.Mode).Must(m => m is null || EnumNames.TryParse<SearchMode>(m, out _))
            .WithMessage("'mode' must be 'hybrid', 'keyword' or 'semantic'.");
        RuleFor(q => q.Role).Must(r => r is null || Roles.IsKnown(r)).WithMessage("'role' must be one of user, assistant, system, tool.");
        RuleFor(q => q.To).Must((q, to) => q.From is null || to is null || q.From <= to).WithMessage("'to' must not be before 'from'.");
        // A message metadata filter is matched against indexed text, which has no NUL characters: they are cleaned, not refused.
        this.KeyValueFilterRules(q => q.Metadata, "metadata", SearchEntries.MaxMetadataFilters, "speaker=Caroline", refuseNul: false);
        this.KeyValueFilterRules(q => q.ConversationMetadata, "conversationMetadata", SearchEntries.MaxMetadataFilters, "userId=42");
        RuleFor(q => q.Diversity).InclusiveBetween(0, 1).WithMessage("'diversity' must be between 0 (off) and 1.");
        RuleFor(q => q.Context).GreaterThanOrEqualTo(0).WithMessage("'context' must not be negative.");
        RuleFor(q => q.Context).LessThanOrEqualTo(o.MaxContextTurns).WithMessage($"'context' may be at most {o.MaxContextTurns} turns.").AsLimit();
    }
}

internal sealed class SearchEntriesHandler(
    TenantContext tenant, HybridSearch search, HitDetails details, ConversationMetadataScope scope, IOptions<SearchOptions> options,
    SearchMetrics metrics)
    : IQueryHandler<SearchEntries, SearchResponse>
{
    public async ValueTask<SearchResponse> Handle(SearchEntries query, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var o = options.Value;
        var tenantId = tenant.TenantId;
        var mode = query.Mode is null ? SearchMode.Hybrid : EnumNames.Parse<SearchMode>(query.Mode);
        var text = QueryText.Clean(query.Q!).Trim();
        // Empty when no conversation of the tenant has that metadata (now): nothing is ranked, and the answer says so as any other.
        var conversationIds = await ConversationsAsync(query, tenantId, cancellationToken);
        var filter = new SearchFilter(
            query.ConversationId,
            query.Scope is null ? SearchScope.All : EnumNames.Parse<SearchScope>(query.Scope),
            query.Role is null ? null : Roles.Normalized(query.Role),
            query.From,
            query.To,
            query.MetadataPairs(),
            ConversationIds: conversationIds);
        var ranking = await search.RankAsync(
            new SearchCriteria(tenantId, text, query.K ?? o.DefaultResults, mode, filter, query.Diversity ?? o.Diversity), cancellationToken);

        var found = await details.LoadAsync(tenantId, text, ranking.Entries.Select(e => e.Id).ToArray(), cancellationToken);
        var context = await details.ContextAsync(tenantId, found.Values, query.Context ?? 0, cancellationToken);
        var hits = new List<SearchHit>(ranking.Entries.Count);
        foreach (var entry in ranking.Entries)
        {
            // An entry deleted between ranking and loading is simply not shown.
            if (!found.TryGetValue(entry.Id, out var d))
            {
                continue;
            }

            var isMessage = d.Kind == EntryKind.Message;
            var around = context.TryGetValue(d.Id, out var c) ? c : default;
            hits.Add(new SearchHit(
                d.Id, d.ConversationId, isMessage ? "message" : "summary", isMessage ? d.Sequence : null, d.ExternalId, d.Role, d.Speaker,
                d.CreatedAt, d.Snippet, d.Highlights, d.HighlightedSnippet, entry.Score, entry.KeywordRank, entry.SemanticRank,
                d.Revision, isMessage ? null : d.FromSequence, isMessage ? null : d.Sequence, d.Metadata,
                query.Context > 0 && isMessage ? around.Before ?? [] : null,
                query.Context > 0 && isMessage ? around.After ?? [] : null));
        }

        metrics.Searched(mode.ToString().ToLowerInvariant(), Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        var semantic = mode == SearchMode.Keyword
            ? new SemanticStatus(null, false, null)
            : new SemanticStatus(ranking.SemanticModel, ranking.SemanticProblem is null, ranking.SemanticProblem);
        return new SearchResponse(text, mode, semantic, hits);
    }

    /// <summary>
    /// The conversations a <c>conversationMetadata</c> filter selects (null without one; with <c>conversationId</c> too, that
    /// one if it matches).
    /// </summary>
    private async Task<IReadOnlyCollection<Guid>?> ConversationsAsync(SearchEntries query, string tenantId, CancellationToken cancellationToken)
    {
        if (query.ConversationMetadata is not { Length: > 0 } filters)
        {
            return null;
        }

        if (query.ConversationId is { } only)
        {
            return await scope.MatchesAsync(tenantId, only, filters, cancellationToken) ? null : [];
        }

        return await scope.MatchingAsync(tenantId, filters, cancellationToken);
    }
}

internal static class SearchEndpoint
{
    public static void MapSearch(this IEndpointRouteBuilder group) =>
        group.MapGet("/", async Task<Ok<SearchResponse>> (
                string? q, int? k, Guid? conversationId, string? scope, string? role, DateTimeOffset? from, DateTimeOffset? to,
                string[]? metadata, string? mode, double? diversity, int? context, string[]? conversationMetadata, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(
                    new SearchEntries(q, k, conversationId, scope, role, from, to, metadata, mode, diversity, context, conversationMetadata), ct)))
            .WithName("Search")
            .WithSummary("Search messages and summaries (hybrid keyword + semantic)")
            .WithDescription(
                "Ranks the caller's messages and summary revisions: PostgreSQL full-text (BM25) and embedding similarity, fused by reciprocal " +
                "rank fusion, with a recency prior and neighbouring-turn context. Filters: conversationId, scope (messages, summaries, all), role, " +
                "from/to (message time), metadata=key=value (repeatable; a message's own metadata), conversationMetadata=key=value (repeatable; " +
                "only conversations whose metadata has every pair, e.g. one end user's). mode=keyword|semantic ranks with one list only; diversity (0-1) " +
                "re-orders for variety (MMR); context=n returns n turns around each message hit. Indexing is asynchronous: a message " +
                "appended a moment ago may not be found yet.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity);
}
