using System.Numerics;
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
        var scope = Scope(tenantId, conversationId);
        // No generation: a change of this node's is not in Redis yet, and what Redis holds may be of before it.
        if (!settings.CacheEnabled || query is not null || await generations.CurrentAsync(scope) is not { } generation)
        {
            // Query results are not cached (queries rarely repeat); the summary inside still is, unless caching is off.
            var window = await LoadWindowAsync(tenantId, conversationId, maxTokens, settings, settings.CacheEnabled, cancellationToken);
            return window is null ? null : await AssembleAsync(tenantId, conversationId, maxTokens, query, window, settings, cancellationToken);
        }

        // One entry per power of two of the budget, not per budget: a client that varies maxTokens (or one that asks for
        // every value) would otherwise store a copy of the conversation's latest messages per value, in this node's memory
        // and in the Redis every tenant shares. Any budget up to the window's is cut from it exactly.
        var tokens = WindowTokens(maxTokens);
        var built = false;
        var key = $"ctx:{scope}:g{generation}:w{tokens}:p{settings.TokensPerMessage}";
        ContextWindow? cached; // null: an entry of an older build, which cached a conversation that did not exist
        try
        {
            cached = await cache.GetOrCreateAsync<ContextWindow?>(
                key,
                async ct =>
                {
                    built = true;
                    // A conversation that does not exist is not cached: every made-up id read would leave entries behind.
                    var window = await LoadWindowAsync(tenantId, conversationId, tokens, settings, cachedSummary: true, ct)
                        ?? throw new NoSuchConversationException();
                    await generations.TrackAsync(scope, key, settings.CacheExpiration);
                    return window;
                },
                CacheEntry(settings),
                cancellationToken: cancellationToken);
        }
        catch (NoSuchConversationException)
        {
            metrics.CacheLookup("context", hit: false);
            await generations.DiscardAsync(scope, generation);
            return null;
        }

        metrics.CacheLookup("context", hit: !built);
        return cached is null ? null : await AssembleAsync(tenantId, conversationId, maxTokens, null, cached, settings, cancellationToken);
    }

    /// <summary>The factory's way of saying there is no such conversation (a value it returned would be cached).</summary>
    private sealed class NoSuchConversationException : Exception;

    /// <summary>The budget of the window a context of <paramref name="maxTokens"/> is cut from: the next power of two, at least 1,024.</summary>
    internal static int WindowTokens(int maxTokens) => (int)Math.Min(int.MaxValue, Math.Max(1024u, BitOperations.RoundUpToPowerOf2((uint)maxTokens)));

    /// <summary>
    /// What every context of a conversation up to <paramref name="tokens"/> is made of: its current summary and its latest
    /// messages, newest first, until they cost <paramref name="tokens"/> or more (each with
    /// <see cref="ContextOptions.TokensPerMessage"/>), or all of them. Null when the conversation does not exist.
    /// </summary>
    private async Task<ContextWindow?> LoadWindowAsync(
        string tenantId, Guid conversationId, int tokens, ContextOptions settings, bool cachedSummary, CancellationToken cancellationToken)
    {
        await using var session = store.QuerySession(tenantId);
        var conversation = await session.LoadAsync<Conversation>(conversationId, cancellationToken);
        if (conversation is null)
        {
            return null;
        }

        var current = await CurrentSummaryAsync(tenantId, conversationId, cachedSummary, cancellationToken);
        var summary = current is null ? null : new ContextSummary(current.Text, current.FromSequence, current.ToSequence, current.Revision, current.TokenCount);

        // A budget the summary fits in leaves the messages what the summary does not take; a smaller one leaves them less
        // than the summary's cost. So the messages of every budget up to the window's cost at most the larger of the two.
        var summaryCost = summary is null ? 0 : summary.TokenCount + settings.TokensPerMessage;
        long needed = summaryCost > 0 && summaryCost <= tokens ? Math.Max(tokens - summaryCost, summaryCost - 1) : tokens;

        // Newest first, a page at a time, until they cost that much (the message that crosses it included: it is the one
        // that tells a context of that size where to stop).
        var newest = new List<ContextMessage>();
        long cost = 0;
        var before = conversation.MessageCount + 1;
        while (cost < needed && before > 1)
        {
            var upper = before;
            var page = await session.Query<StoredMessage>()
                .Where(m => m.ConversationId == conversationId && m.Sequence < upper)
                .OrderByDescending(m => m.Sequence)
                .Take(settings.PageSize)
                .ToListAsync(cancellationToken);
            foreach (var message in page)
            {
                newest.Add(ToContext(message));
                cost += message.TokenCount + settings.TokensPerMessage;
                if (cost >= needed)
                {
                    break;
                }
            }

            if (page.Count < settings.PageSize)
            {
                break;
            }

            before = page[^1].Sequence;
        }

        return new ContextWindow(conversation.MessageCount, summary, newest);
    }

    /// <summary>
    /// The context of <paramref name="maxTokens"/> cut from <paramref name="window"/> (loaded for that many tokens or more):
    /// the summary when it fits, then the latest messages while they fit, and with a query a share of the budget for the
    /// best-matching earlier messages.
    /// </summary>
    private async Task<ConversationContext> AssembleAsync(
        string tenantId, Guid conversationId, int maxTokens, string? query, ContextWindow window, ContextOptions settings,
        CancellationToken cancellationToken)
    {
        var remaining = maxTokens;
        ContextSummary? summary = null;
        if (window.Summary is { } current && current.TokenCount + settings.TokensPerMessage <= remaining)
        {
            summary = current;
            remaining -= current.TokenCount + settings.TokensPerMessage;
        }

        // With a query, a share of what is left is kept for search hits.
        var search = query is null || settings.SearchHits == 0 ? null : services.GetService<IConversationSearch>();
        var hitBudget = search is null ? 0 : (int)(remaining * settings.SearchTokenShare);
        remaining -= hitBudget;

        var picked = new List<ContextMessage>();
        foreach (var message in window.NewestFirst)
        {
            var cost = message.TokenCount + settings.TokensPerMessage;
            if (cost > remaining)
            {
                break;
            }

            picked.Add(message);
            remaining -= cost;
        }

        picked.Reverse();
        var firstIncluded = picked.Count > 0 ? picked[0].Sequence : window.MessageCount + 1;
        var coverage = new ContextCoverage(
            window.MessageCount,
            summary?.ToSequence,
            picked.Count > 0 ? picked[0].Sequence : null,
            picked.Count > 0 ? picked[^1].Sequence : null,
            Complete: (summary?.ToSequence ?? 0) >= firstIncluded - 1);
        IReadOnlyList<ContextMessage> hits = [];
        if (search is not null)
        {
            await using var session = store.QuerySession(tenantId);
            hits = await SearchHitsAsync(search, session, tenantId, conversationId, query!, firstIncluded, hitBudget, settings, cancellationToken);
        }

        var total = maxTokens - remaining - hitBudget + hits.Sum(h => h.TokenCount + settings.TokensPerMessage);
        return new ConversationContext(conversationId, maxTokens, total, summary, picked, coverage, hits);
    }

    /// <summary>The best matches of the query among the messages before <paramref name="firstIncluded"/>, best first, while they fit.</summary>
    private static async Task<IReadOnlyList<ContextMessage>> SearchHitsAsync(
        IConversationSearch search, IQuerySession session, string tenantId, Guid conversationId, string query, long firstIncluded,
        int budget, ContextOptions settings, CancellationToken cancellationToken)
    {
        if (firstIncluded <= 1 || budget <= settings.TokensPerMessage)
        {
            return [];
        }

        var found = await search.SearchAsync(
            new ConversationSearchRequest(tenantId, conversationId, query, settings.SearchHits, firstIncluded, long.MaxValue), cancellationToken);
        var sequences = found.Select(h => h.Sequence).Where(s => s < firstIncluded).ToArray();
        if (sequences.Length == 0)
        {
            return [];
        }

        // Found messages may since have been archived (still readable) or deleted by retention (then left out).
        var batch = session.CreateBatchQuery();
        var hot = batch.Query<StoredMessage>().Where(m => m.ConversationId == conversationId && sequences.Contains(m.Sequence)).ToList();
        var archived = batch.Query<ArchivedMessage>().Where(m => m.ConversationId == conversationId && sequences.Contains(m.Sequence)).ToList();
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

    /// <summary>The current summary, from the cache when <paramref name="cached"/> (under the summary's own generation).</summary>
    private async Task<ConversationSummary?> CurrentSummaryAsync(string tenantId, Guid conversationId, bool cached, CancellationToken cancellationToken)
    {
        if (services.GetService<IConversationSummaries>() is not { } summaries)
        {
            return null;
        }

        // Its own generation: a chat turn's append changes the context, not the summary, which stays cached.
        var scope = SummaryScope(tenantId, conversationId);
        if (!cached || await generations.CurrentAsync(scope) is not { } summaryGeneration)
        {
            return await summaries.GetCurrentAsync(tenantId, conversationId, cancellationToken);
        }

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

/// <summary>
/// What a conversation's contexts up to some budget are cut from (cached per budget's power of two): its message count,
/// current summary and latest messages, newest first.
/// </summary>
internal sealed record ContextWindow(long MessageCount, ContextSummary? Summary, IReadOnlyList<ContextMessage> NewestFirst);
