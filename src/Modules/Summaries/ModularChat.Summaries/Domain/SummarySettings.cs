using System.Collections.Concurrent;
using Microsoft.Extensions.Options;

namespace ModularChat.Summaries.Domain;

/// <summary>The settings one tenant's summaries are written with: the module's options overlaid with the tenant's variant.</summary>
/// <param name="Variant">The variant's name ("default" when the tenant is on none).</param>
public sealed record SummarySettings(
    string Variant,
    StrategySettings Strategy,
    string Summarizer,
    bool UseTenantProviders,
    int MaxSummaryTokens,
    int ChunkSize,
    string Model,
    string SystemPrompt,
    string PromptVersion);

/// <summary>Resolves each tenant's <see cref="SummarySettings"/> (computed once per variant).</summary>
public sealed class SummarySettingsResolver(IOptions<SummariesOptions> options)
{
    private readonly ConcurrentDictionary<string, SummarySettings> _byVariant = new(StringComparer.Ordinal);

    public SummarySettings For(string? tenantId)
    {
        var o = options.Value;
        // The variant as its section names it (configuration keys are matched in any case; revisions and metrics record one name).
        var variant = tenantId is not null && o.TenantVariants.TryGetValue(tenantId, out var name) && !SummariesOptions.IsDefaultVariant(name)
            ? o.Variants.Keys.FirstOrDefault(k => string.Equals(k, name, StringComparison.OrdinalIgnoreCase)) ?? name
            : SummariesOptions.DefaultVariant;
        return _byVariant.GetOrAdd(variant, v => Build(o, v));
    }

    private static SummarySettings Build(SummariesOptions o, string variant)
    {
        var v = o.Variants.GetValueOrDefault(variant) ?? new SummaryVariantOptions();
        SummariesOptions.TryParseMilestones(v.Milestones ?? o.Milestones, out var milestones);
        var strategy = new StrategySettings(milestones, v.RepeatEvery ?? o.RepeatEvery, v.TokenThreshold ?? o.TokenThreshold, v.MinInterval ?? o.MinInterval);
        return new SummarySettings(
            variant,
            strategy,
            v.Summarizer ?? o.Summarizer,
            v.UseTenantProviders ?? o.UseTenantProviders,
            v.MaxSummaryTokens ?? o.MaxSummaryTokens,
            v.ChunkSize ?? o.ChunkSize,
            v.Model ?? o.Llm.Model,
            v.SystemPrompt ?? o.Llm.SystemPrompt,
            v.PromptVersion ?? o.Llm.PromptVersion);
    }
}
