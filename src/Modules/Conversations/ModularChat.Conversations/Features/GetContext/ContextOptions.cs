using ModularChat.BuildingBlocks.Caching;
using FluentValidation;

namespace ModularChat.Conversations.Features.GetContext;

/// <summary>The context endpoint and its cache (section <c>Context</c>).</summary>
public sealed class ContextOptions
{
    public const string Section = "Context";

    /// <summary>Budget when the caller gives no maxTokens.</summary>
    public int DefaultMaxTokens { get; set; } = 4000;

    /// <summary>Largest budget a caller may ask for.</summary>
    public int MaxMaxTokens { get; set; } = 1_000_000;

    /// <summary>Tokens a model spends per message on its framing (role, separators), counted with each message.</summary>
    public int TokensPerMessage { get; set; } = 4;

    /// <summary>Messages read per database round trip while filling the budget.</summary>
    public int PageSize { get; set; } = 64;

    /// <summary>Search hits added for a query (when the Search module is present).</summary>
    public int SearchHits { get; set; } = 5;

    /// <summary>
    /// With a query, the share of the budget (after the summary) kept for search hits before recent messages fill it;
    /// what the hits leave unused is not given back, so the total stays predictable.
    /// </summary>
    public double SearchTokenShare { get; set; } = 0.25;

    /// <summary>Cache contexts and summaries (in-process L1 and Redis L2). Off: every request reads the database.</summary>
    public bool CacheEnabled { get; set; } = true;

    /// <summary>How long an entry lives in Redis (L2).</summary>
    public TimeSpan CacheExpiration { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How long an entry lives in each node's memory (L1).</summary>
    public TimeSpan LocalCacheExpiration { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>L1 lifetime while Redis is unavailable: other nodes' changes cannot be seen then, so keep it short.</summary>
    public TimeSpan LocalOnlyExpiration { get; set; } = TimeSpan.FromSeconds(2);
}

internal sealed class ContextOptionsValidator : AbstractValidator<ContextOptions>
{
    public ContextOptionsValidator()
    {
        RuleFor(o => o.MaxMaxTokens).InclusiveBetween(1, 100_000_000);
        RuleFor(o => o.DefaultMaxTokens).GreaterThan(0).LessThanOrEqualTo(o => o.MaxMaxTokens).WithMessage("must be between 1 and MaxMaxTokens.");
        RuleFor(o => o.TokensPerMessage).InclusiveBetween(0, 1000);
        RuleFor(o => o.PageSize).InclusiveBetween(1, 10_000);
        RuleFor(o => o.SearchHits).InclusiveBetween(0, 100);
        RuleFor(o => o.SearchTokenShare).InclusiveBetween(0, 1);
        RuleFor(o => o.CacheExpiration).GreaterThan(TimeSpan.Zero).LessThan(CacheGenerations.GenerationLifetime)
            .WithMessage($"must be positive and shorter than {CacheGenerations.GenerationLifetime} (how long an unused cache generation is kept).");
        RuleFor(o => o.LocalCacheExpiration).GreaterThan(TimeSpan.Zero).LessThanOrEqualTo(o => o.CacheExpiration)
            .WithMessage("must be positive and at most CacheExpiration.");
        RuleFor(o => o.LocalOnlyExpiration).GreaterThan(TimeSpan.Zero);
    }
}
