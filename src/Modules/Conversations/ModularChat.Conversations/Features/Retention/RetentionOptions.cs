using FluentValidation;
using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations.Features.Retention;

/// <summary>
/// What conversations keep once summaries cover their messages (section <c>Retention</c>): a global policy and
/// per-tenant overrides (<c>Retention:Tenants:&lt;tenant&gt;:Policy</c> / <c>KeepLast</c>).
/// </summary>
public sealed class RetentionOptions
{
    public const string Section = "Retention";

    /// <summary>keep-all (default), keep-last-n, archive-after-summary or delete-after-summary.</summary>
    public string Policy { get; set; } = "keep-all";

    /// <summary>The latest messages that always stay, whatever the policy (N).</summary>
    public int KeepLast { get; set; } = 20;

    /// <summary>
    /// Longest a retention step waits for every asynchronous projection (search indexing) to have read the events it
    /// compacts away; after that it goes ahead, and what the projections had not read they never see.
    /// </summary>
    public TimeSpan MaxProjectionWait { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// The most messages one retention step archives or deletes (0: no limit). A step is read into memory and written in
    /// one transaction that holds the conversation's lock: a long history summarized before its policy was switched on is
    /// retained in several steps, one after the other, rather than in one that makes the conversation's appends wait.
    /// </summary>
    public int MaxMessagesPerStep { get; set; } = 5000;

    /// <summary>
    /// Per-tenant overrides of <see cref="Policy"/> and <see cref="KeepLast"/>, by tenant id in any case: .NET's
    /// configuration merges keys that differ only in case (an override written <c>Acme</c> in one file and <c>acme</c> in
    /// an environment variable is one override), so it cannot tell such tenants apart either.
    /// </summary>
    public Dictionary<string, TenantRetentionOptions> Tenants { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>The policy of a tenant.</summary>
    public RetentionPolicy For(string tenantId)
    {
        Tenants.TryGetValue(tenantId, out var tenant);
        return new RetentionPolicy(RetentionPolicy.Names[tenant?.Policy ?? Policy], tenant?.KeepLast ?? KeepLast, MaxMessagesPerStep);
    }
}

/// <summary>A tenant's override of the retention policy.</summary>
public sealed class TenantRetentionOptions
{
    public string? Policy { get; set; }

    public int? KeepLast { get; set; }
}

internal sealed class RetentionOptionsValidator : AbstractValidator<RetentionOptions>
{
    private static readonly string Known = string.Join(", ", RetentionPolicy.Names.Keys);

    public RetentionOptionsValidator()
    {
        RuleFor(o => o.Policy).Must(p => RetentionPolicy.Names.ContainsKey(p)).WithMessage($"must be one of {Known}");
        RuleFor(o => o.KeepLast).InclusiveBetween(0, 1_000_000);
        RuleFor(o => o.MaxProjectionWait).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromDays(1));
        RuleFor(o => o.MaxMessagesPerStep).Must(m => m == 0 || m is >= 100 and <= 1_000_000).WithMessage("must be 0 (no limit) or between 100 and 1000000");
        RuleForEach(o => o.Tenants).ChildRules(t =>
        {
            t.RuleFor(e => e.Value.Policy).Must(p => p is null || RetentionPolicy.Names.ContainsKey(p))
                .WithMessage(e => $"Tenants:{e.Key}:Policy must be one of {Known}");
            t.RuleFor(e => e.Value.KeepLast).InclusiveBetween(0, 1_000_000).When(e => e.Value.KeepLast is not null)
                .WithMessage(e => $"Tenants:{e.Key}:KeepLast must be between 0 and 1000000");
        });
    }
}
