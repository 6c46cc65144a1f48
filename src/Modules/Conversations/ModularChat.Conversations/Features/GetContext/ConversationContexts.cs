using Marten;
using Microsoft.Extensions.Caching.Hybrid;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Caching;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;
using ModularChat.Search.Contracts;
using ModularChat.Summaries.Contracts;

namespace ModularChat.Conversations.Features.GetContext;

/// <summary>
/// Builds a conversation's context: the current summary when it fits, then the most recent messages, newest
/// first while they fit, returned oldest first. Contexts and summaries are cached per conversation under its
/// cache generation (<see cref="CacheGenerations"/>), which every change that affects them bumps: appends,
/// summary revisions, retention, deletion. With a query and the Search module present, a share of the budget goes to
/// the best-matching earlier messages that the recent ones do not already include.
/// </summary>
internal sealed class ConversationContexts(
    IDocumentStore store,
    IServiceProvider services,
    HybridCache cache,
    CacheGenerations generations,
    ConversationsMetrics metrics,
    IOptionsMonitor<ContextOptions> options) : IConversationContexts
{
    /// <summary>The cache scope of a conversation's contexts: appends, summary revisions, retention and deletion change it.</summary>
    public static string Scope(string tenantId, Guid conversationId) => $"conv:{tenantId}:{conversationId:N}";

    /// <summary>The cache scope of a conversation's current summary: only summary revisions and deletion change it (appends do not).</summary>
    public static string SummaryScope(string tenantId, Guid conversationId) => $"sum:{tenantId}:{conversationId:N}";

    public async Task<ConversationContext?> GetAsync(
        string tenantId, Guid conversationId, int maxTokens, string? query = null, CancellationToken cancellationToken = default)
    {
        var settings = options.CurrentValue;
        if (!settings.CacheEnabled)
        {
            return await BuildAsync(tenantId, conversationId, maxTokens, query, settings, generation: null, cancellationToken);
        }

        var scope = Scope(tenantId, conversationId);
        var generation = await generations.CurrentAsync(scope);
        if (query is not null)
        {
            // Query results are not cached (queries rarely repeat); the summary inside still is.
            return await BuildAsync(tenantId, conversationId, maxTokens, query, settings, generation, cancellationToken);
        }

        var built = false;
        var key = $"ctx:{scope}:g{generation}:{maxTokens}";
        var context = await cache.GetOrCreateAsync(
            key,
            async ct =>
            {
                built = true;
                await generations.TrackAsync(scope, key, settings.CacheExpiration);
                return await BuildAsync(tenantId, conversationId, maxTokens, null, settings, generation, ct);
            },
            CacheEntry(settings),
            cancellationToken: cancellationToken);
        metrics.CacheLookup("context", hit: !built);
        return context;
    }

    private async Task<ConversationContext?> BuildAsync(
        string tenantId, Guid conversationId, int maxTokens, string? query, ContextOptions settings, long? generation,
        CancellationToken cancellationToken)
    {
        await using var session = store.QuerySession(tenantId);
        var conversation = await session.LoadAsync<Conversation>(conversationId, cancellationToken);
        if (conversation is null)
        {
            return null;
        }

        var remaining = maxTokens;
        ContextSummary? summary = null;
        if (await CurrentSummaryAsync(tenantId, conversationId, generation, cancellationToken) is { } current
            && current.TokenCount + settings.TokensPerMessage <= remaining)
        {
            summary = new ContextSummary(current.Text, current.FromSequence, current.ToSequence, current.Revision, current.TokenCount);
            remaining -= current.TokenCount + settings.TokensPerMessage;
        }

        // With a query, a share of what is left is kept for search hits.
        var search = query is null || settings.SearchHits == 0 ? null : services.GetService<IConversationSearch>();
        var hitBudget = search is null ? 0 : (int)(remaining * settings.SearchTokenShare);
        remaining -= hitBudget;

        // Newest first, a page at a time, until the next message does not fit.
        var picked = new List<StoredMessage>();
        var before = conversation.MessageCount + 1;
        var full = false;
        while (!full && before > 1)
        {
            var upper = before;
            var page = await session.Query<StoredMessage>()
                .Where(m => m.ConversationId == conversationId && m.Sequence < upper)
                .OrderByDescending(m => m.Sequence)
                .Take(settings.PageSize)
                .ToListAsync(cancellationToken);
            foreach (var message in page)
            {
                var cost = message.TokenCount + settings.TokensPerMessage;
                if (cost > remaining)
                {
                    full = true;
                    break;
                }

                picked.Add(message);
                remaining -= cost;
            }

            if (page.Count < settings.PageSize)
            {
                break;
            }

            before = page[^1].Sequence;
        }

        picked.Reverse();
        var messages = picked.Select(ToContext).ToList();
        var firstIncluded = messages.Count > 0 ? messages[0].Sequence : conversation.MessageCount + 1;
        var coverage = new ContextCoverage(
            conversation.MessageCount,
            summary?.ToSequence,
            messages.Count > 0 ? messages[0].Sequence : null,
            messages.Count > 0 ? messages[^1].Sequence : null,
            Complete: (summary?.ToSequence ?? 0) >= firstIncluded - 1);
        var hits = search is null
            ? []
            : await SearchHitsAsync(search, session, tenantId, conversation, query!, firstIncluded, hitBudget, settings, cancellationToken);
        var total = maxTokens - remaining - hitBudget + hits.Sum(h => h.TokenCount + settings.TokensPerMessage);
        return new ConversationContext(conversationId, maxTokens, total, summary, messages, coverage, hits);
    }

    /// <summary>The best matches of the query among the messages before <paramref name="firstIncluded"/>, best first, while they fit.</summary>
    private static async Task<IReadOnlyList<ContextMessage>> SearchHitsAsync(
        IConversationSearch search, IQuerySession session, string tenantId, Conversation conversation, string query, long firstIncluded,
        int budget, ContextOptions settings, CancellationToken cancellationToken)
    {
        if (firstIncluded <= 1 || budget <= settings.TokensPerMessage)
        {
            return [];
        }

        var found = await search.SearchAsync(
            new ConversationSearchRequest(tenantId, conversation.Id, query, settings.SearchHits, firstIncluded, long.MaxValue), cancellationToken);
        var sequences = found.Select(h => h.Sequence).Where(s => s < firstIncluded).ToArray();
        if (sequences.Length == 0)
        {
            return [];
        }

        // Found messages may since have been archived (still readable) or deleted by retention (then left out).
        var batch = session.CreateBatchQuery();
        var hot = batch.Query<StoredMessage>().Where(m => m.ConversationId == conversation.Id && sequences.Contains(m.Sequence)).ToList();
        var archived = batch.Query<ArchivedMessage>().Where(m => m.ConversationId == conversation.Id && sequences.Contains(m.Sequence)).ToList();
        await batch.Execute(cancellationToken);
        // Read in two statements: a message retention moved between them is in both.
        var bySequence = (await hot).Select(ToContext).Concat((await archived).Select(ToContext)).DistinctBy(m => m.Sequence).ToDictionary(m => m.Sequence);

        var hits = new List<ContextMessage>();
        foreach (var sequence in sequences)
        {
            if (bySequence.TryGetValue(sequence, out var message) && message.TokenCount + settings.TokensPerMessage <= budget)
            {
                hits.Add(message);
                budget -= message.TokenCount + settings.TokensPerMessage;
            }
        }

        return hits;
    }

    /// <summary>The current summary, cached under <paramref name="generation"/> (null: caching is off).</summary>
    private async Task<ConversationSummary?> CurrentSummaryAsync(string tenantId, Guid conversationId, long? generation, CancellationToken cancellationToken)
    {
        if (services.GetService<IConversationSummaries>() is not { } summaries)
        {
            return null;
        }

        if (generation is null)
        {
            return await summaries.GetCurrentAsync(tenantId, conversationId, cancellationToken);
        }

        // Its own generation: a chat turn's append changes the context, not the summary, which stays cached.
        var scope = SummaryScope(tenantId, conversationId);
        var summaryGeneration = await generations.CurrentAsync(scope);
        var built = false;
        var key = $"{scope}:g{summaryGeneration}";
        var summary = await cache.GetOrCreateAsync(
            key,
            async ct =>
            {
                built = true;
                await generations.TrackAsync(scope, key, options.CurrentValue.CacheExpiration);
                return await summaries.GetCurrentAsync(tenantId, conversationId, ct);
            },
            CacheEntry(options.CurrentValue),
            cancellationToken: cancellationToken);
        metrics.CacheLookup("summary", hit: !built);
        return summary;
    }

    private HybridCacheEntryOptions CacheEntry(ContextOptions settings) => new()
    {
        Expiration = settings.CacheExpiration,
        LocalCacheExpiration = generations.Shared ? settings.LocalCacheExpiration : settings.LocalOnlyExpiration,
    };

    private static ContextMessage ToContext(StoredMessage m) => new(m.Sequence, m.Role, m.Content, m.TokenCount, m.CreatedAt, m.ExternalId);

    private static ContextMessage ToContext(ArchivedMessage m) => new(m.Sequence, m.Role, m.Content, m.TokenCount, m.CreatedAt, m.ExternalId);
}
