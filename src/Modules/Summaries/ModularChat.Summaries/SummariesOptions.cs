using System.Globalization;
using FluentValidation;

namespace ModularChat.Summaries;

/// <summary>
/// Everything the Summaries module does is tuned here (section <c>Summaries</c>): when summaries are written,
/// by which summarizer, how jobs retry, how the sweep runs, and per-tenant variants for side-by-side comparisons.
/// </summary>
public sealed class SummariesOptions
{
    public const string Section = "Summaries";

    /// <summary>The summarizer names.</summary>
    public const string ExtractiveSummarizer = "extractive";

    public const string LlmSummarizer = "llm";

    /// <summary>The variant tenants are on unless <see cref="TenantVariants"/> names another.</summary>
    public const string DefaultVariant = "default";

    /// <summary>Whether a variant name is the default's, in any case (configuration names are).</summary>
    public static bool IsDefaultVariant(string name) => string.Equals(name, DefaultVariant, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Automatic summaries: the module follows every append (its <c>AppendsCommitted</c> notices) and queues a summary when the
    /// strategy says so. When false, the module does not handle append notices at all (appends write nothing for it);
    /// summaries are written only on request (POST, sweep). Deletions are always followed.
    /// </summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Message counts at which a summary is due, ascending (comma-separated).</summary>
    public string Milestones { get; set; } = "10,25,50,100,200,500";

    /// <summary>After the last milestone, a summary is due every this many messages.</summary>
    public int RepeatEvery { get; set; } = 500;

    /// <summary>A summary is due earlier when the messages it does not cover hold at least this many tokens.</summary>
    public int TokenThreshold { get; set; } = 4000;

    /// <summary>Automatic summaries of one conversation never come closer together than this (requests and rebuilds may).</summary>
    public TimeSpan MinInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary><c>extractive</c> (built in, offline) or <c>llm</c> (an OpenAI-compatible chat endpoint).</summary>
    public string Summarizer { get; set; } = ExtractiveSummarizer;

    /// <summary>A tenant with its own LLM provider for summaries gets the <c>llm</c> summarizer on that provider.</summary>
    public bool UseTenantProviders { get; set; } = true;

    /// <summary>The longest summary, in o200k tokens (the extractive budget; the LLM is told the limit).</summary>
    public int MaxSummaryTokens { get; set; } = 600;

    /// <summary>Messages read and merged at a time: at most one chunk is in memory while summarizing.</summary>
    public int ChunkSize { get; set; } = 200;

    /// <summary>The global OpenAI-compatible endpoint of the <c>llm</c> summarizer.</summary>
    public LlmSummarizerOptions Llm { get; set; } = new();

    /// <summary>
    /// Summaries written at once on one node (most of a job's time may be spent waiting for a model); jobs of one conversation
    /// always run one after the other. Above 1 it is rounded up to 3, 5, 7 or 9 partitions.
    /// </summary>
    public int JobParallelism { get; set; } = 3;

    /// <summary>
    /// Most jobs of one tenant that run at once on one node, so that a tenant whose model is slow, or that has thousands of
    /// summaries due (an import), leaves job slots to the others. A job of a tenant that already runs this many puts itself off
    /// (<see cref="TenantShareRecheck"/>) and looks again; the tenant's jobs put off go first, oldest first. 0 = one less than
    /// <see cref="JobParallelism"/>, at least 1;
    /// <see cref="JobParallelism"/> (or 1 when it is 1) sets no limit, as a single-tenant deployment may want.
    /// </summary>
    public int MaxJobsPerTenant { get; set; }

    /// <summary>
    /// How long a job puts itself off when its tenant already runs <see cref="MaxJobsPerTenant"/> jobs on the node, before it
    /// looks again; longer for a job with many of its tenant's jobs put off before it (see <see cref="Jobs.TenantJobShares"/>).
    /// </summary>
    public TimeSpan TenantShareRecheck { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>The tenant share in effect: <see cref="MaxJobsPerTenant"/>, or its default for 0.</summary>
    internal int EffectiveMaxJobsPerTenant => MaxJobsPerTenant > 0 ? MaxJobsPerTenant : Math.Max(1, JobParallelism - 1);

    /// <summary>
    /// Extractive merges computed at once on one node (they are CPU-bound); 0 = half the processors, at least one, so
    /// summarizing never takes every core from the requests.
    /// </summary>
    public int ExtractiveParallelism { get; set; }

    /// <summary>
    /// Longest run of one summarization job before it is cancelled and retried. A job stops folding chunks once half of it
    /// has gone, stores the revision so far and queues the rest (<see cref="MaxChunksPerJob"/>), so a long backlog on a slow
    /// model is never cut off.
    /// </summary>
    public TimeSpan JobTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Most chunks (<see cref="ChunkSize"/> messages each) one job folds into the summary; with more to read, it stores the
    /// revision so far and queues a job for the rest behind the others, so one long backlog (an imported history) does not
    /// hold a job slot from other conversations' summaries. 0 = no limit (half of <see cref="JobTimeout"/> still applies).
    /// </summary>
    public int MaxChunksPerJob { get; set; } = 25;

    /// <summary>Delays before each retry of a failed job (comma-separated, growing); after the last, the job is dead-lettered.</summary>
    public string RetryDelays { get; set; } = "00:00:05,00:00:30,00:02:00,00:10:00";

    /// <summary>A queued job not done after this long is presumed lost: the conversation may be queued again.</summary>
    public TimeSpan PendingJobTimeout { get; set; } = TimeSpan.FromMinutes(30);

    /// <summary>Most append notices handled together (one transaction per batch and tenant).</summary>
    public int EventBatchSize { get; set; } = 500;

    /// <summary>How long append notices gather before a smaller batch is handled.</summary>
    public TimeSpan EventBatchWindow { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// While a burst of appends is on (<c>Background:YieldAboveMessagesPerSecond</c>), how long an automatic job puts itself
    /// off before it looks again (no longer than <c>Background:MaxYieldLag</c> after what made it due, all told). Each look is
    /// a rescheduled durable message: shorter means summaries sooner after the burst, longer means less work during it.
    /// </summary>
    public TimeSpan BurstRecheckInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long a job puts itself off when another job (usually on another node) is writing the same revision, before it
    /// looks again; by then it usually finds the revision written and does nothing.
    /// </summary>
    public TimeSpan ClaimRecheckInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Longest a deleted conversation's summary stream waits for Marten's daemon to read past its last event before it
    /// is removed anyway (ADR 0009).
    /// </summary>
    public TimeSpan PurgeMaxWait { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>The sweep that finds missing and stale summaries.</summary>
    public SummarySweepOptions Sweep { get; set; } = new();

    /// <summary>How often the backlog gauge is recomputed.</summary>
    public TimeSpan BacklogRefreshInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Revisions per page of <c>GET .../summaries</c> when the request gives no limit.</summary>
    public int DefaultPageSize { get; set; } = 20;

    /// <summary>Most revisions per page (and failures per page of the admin list).</summary>
    public int MaxPageSize { get; set; } = 100;

    /// <summary>
    /// Named variants: overrides of the settings above, for the tenants listed in <see cref="TenantVariants"/>. Names in
    /// any case, as .NET's configuration merges keys that differ only in case.
    /// </summary>
    public Dictionary<string, SummaryVariantOptions> Variants { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Tenant id (in any case, as configuration keys are) to variant name.</summary>
    public Dictionary<string, string> TenantVariants { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    internal static bool TryParseMilestones(string? text, out long[] milestones)
    {
        milestones = [];
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var values = new long[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            if (!long.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out values[i]) || values[i] < 1 || (i > 0 && values[i] <= values[i - 1]))
            {
                return false;
            }
        }

        milestones = values;
        return values.Length > 0;
    }

    internal static bool TryParseDelays(string? text, out TimeSpan[] delays)
    {
        delays = [];
        if (text is null)
        {
            return false;
        }

        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var values = new TimeSpan[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            if (!TimeSpan.TryParse(parts[i], CultureInfo.InvariantCulture, out values[i]) || values[i] <= TimeSpan.Zero)
            {
                return false;
            }
        }

        delays = values;
        return true;
    }
}

/// <summary>The OpenAI-compatible chat endpoint of the <c>llm</c> summarizer (for tenants without their own provider).</summary>
public sealed class LlmSummarizerOptions
{
    /// <summary>API root, e.g. https://api.openai.com/v1 or http://localhost:11434/v1. Empty: only tenants' own providers are used.</summary>
    public string? Endpoint { get; set; }

    /// <summary>API key sent as a bearer token (never logged).</summary>
    public string? ApiKey { get; set; }

    public string Model { get; set; } = "gpt-4o-mini";

    /// <summary>
    /// Instructions to the model. <c>{maxTokens}</c> and <c>{maxWords}</c> are replaced by the length limit, which the model
    /// is asked to respect; a reply that still runs over is cut at the last complete sentence, never inside one.
    /// </summary>
    public string SystemPrompt { get; set; } =
        "You keep a running summary of a conversation. You receive the current summary (possibly empty) and the next messages, " +
        "each with its date and speaker. Write the updated summary: merge the new messages into the summary, keep who said or did what " +
        "(speaker names) and when (dates), keep facts, decisions, plans, preferences and open questions, and drop small talk. " +
        "Write complete sentences in plain prose, in the conversation's language, without a preamble. " +
        "The summary must not exceed {maxTokens} tokens (about {maxWords} words): when space runs out, leave out the least important details, never cut a sentence.";

    /// <summary>Recorded on each revision: change it when the prompt changes.</summary>
    public string PromptVersion { get; set; } = "llm-v1";

    /// <summary>Longest wait for one model reply before the attempt fails (and is retried).</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(60);

    public float Temperature { get; set; } = 0.2f;
}

/// <summary>The sweep: finds conversations whose summary is missing or stale and queues them.</summary>
public sealed class SummarySweepOptions
{
    /// <summary>How often one node sweeps; zero turns the scheduled sweep off (the command and endpoint still work).</summary>
    public TimeSpan Interval { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>Conversations read from the read model at a time.</summary>
    public int BatchSize { get; set; } = 200;

    /// <summary>Most jobs a sweep has queued and not yet seen finish.</summary>
    public int MaxInFlight { get; set; } = 8;

    /// <summary>How long a sweep waits for a queued job before it counts it as unfinished and moves on.</summary>
    public TimeSpan JobWait { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How long ago a conversation's last append must be before a sweep corrects the activity it finds behind: notices of
    /// recent appends may still be on their way and would do it anyway (a notice that arrives after a sweep counted its
    /// messages adds nothing: <see cref="Domain.ConversationActivity.CountedTo"/>).
    /// </summary>
    public TimeSpan NoticeSettle { get; set; } = TimeSpan.FromMinutes(1);
}

/// <summary>A named variant: each value given replaces the module-wide one for the tenants on the variant.</summary>
public sealed class SummaryVariantOptions
{
    public string? Milestones { get; set; }

    public int? RepeatEvery { get; set; }

    public int? TokenThreshold { get; set; }

    public TimeSpan? MinInterval { get; set; }

    public string? Summarizer { get; set; }

    public bool? UseTenantProviders { get; set; }

    public int? MaxSummaryTokens { get; set; }

    public int? ChunkSize { get; set; }

    /// <summary>The model on the global LLM endpoint.</summary>
    public string? Model { get; set; }

    public string? SystemPrompt { get; set; }

    public string? PromptVersion { get; set; }
}

internal sealed class SummariesOptionsValidator : AbstractValidator<SummariesOptions>
{
    private static readonly string[] Summarizers = [SummariesOptions.ExtractiveSummarizer, SummariesOptions.LlmSummarizer];

    public SummariesOptionsValidator()
    {
        RuleFor(o => o.Milestones).Must(m => SummariesOptions.TryParseMilestones(m, out _))
            .WithMessage("must list positive, strictly ascending message counts separated by commas, e.g. '10,25,50,100,200,500'.");
        RuleFor(o => o.RepeatEvery).InclusiveBetween(1, 1_000_000);
        RuleFor(o => o.TokenThreshold).InclusiveBetween(1, 10_000_000);
        RuleFor(o => o.MinInterval).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromDays(7));
        RuleFor(o => o.Summarizer).Must(s => Summarizers.Contains(s)).WithMessage("must be 'extractive' or 'llm'.");
        RuleFor(o => o.MaxSummaryTokens).InclusiveBetween(32, 100_000);
        RuleFor(o => o.ChunkSize).InclusiveBetween(1, 10_000);
        RuleFor(o => o.Llm.Endpoint).Must(e => string.IsNullOrWhiteSpace(e) || (Uri.TryCreate(e, UriKind.Absolute, out var u) && u.Scheme is "http" or "https"))
            .WithMessage("must be an absolute http(s) URL such as https://api.openai.com/v1, or empty.");
        RuleFor(o => o.Llm.Model).NotEmpty();
        RuleFor(o => o.Llm.SystemPrompt).NotEmpty();
        RuleFor(o => o.Llm.PromptVersion).NotEmpty();
        RuleFor(o => o.Llm.Timeout).InclusiveBetween(TimeSpan.FromSeconds(1), TimeSpan.FromHours(1));
        RuleFor(o => o.Llm.Temperature).InclusiveBetween(0f, 2f);
        RuleFor(o => o.JobParallelism).InclusiveBetween(1, 9);
        RuleFor(o => o.MaxJobsPerTenant).Must((o, share) => share >= 0 && share <= Math.Max(1, o.JobParallelism))
            .WithMessage(o => $"must be between 0 and JobParallelism ({o.JobParallelism}): the jobs of one tenant that run at once on a node, " +
                              "0 for one less than JobParallelism (at least 1), JobParallelism for no limit.");
        RuleFor(o => o.ExtractiveParallelism).InclusiveBetween(0, 64);
        RuleFor(o => o.JobTimeout).InclusiveBetween(TimeSpan.FromSeconds(5), TimeSpan.FromHours(6));
        RuleFor(o => o.MaxChunksPerJob).InclusiveBetween(0, 1_000_000);
        RuleFor(o => o.RetryDelays).Must(d => SummariesOptions.TryParseDelays(d, out var delays) && delays.Length <= 20)
            .WithMessage("must list at most 20 positive durations separated by commas, e.g. '00:00:05,00:00:30,00:02:00'.");
        RuleFor(o => o.PendingJobTimeout).GreaterThanOrEqualTo(o => o.JobTimeout).WithMessage("must be at least JobTimeout.");
        RuleFor(o => o.EventBatchSize).InclusiveBetween(1, 10_000);
        RuleFor(o => o.EventBatchWindow).InclusiveBetween(TimeSpan.FromMilliseconds(1), TimeSpan.FromMinutes(1));
        RuleFor(o => o.BurstRecheckInterval).InclusiveBetween(TimeSpan.FromMilliseconds(100), TimeSpan.FromMinutes(5));
        RuleFor(o => o.TenantShareRecheck).InclusiveBetween(TimeSpan.FromMilliseconds(100), TimeSpan.FromMinutes(1));
        RuleFor(o => o.ClaimRecheckInterval).InclusiveBetween(TimeSpan.FromMilliseconds(100), TimeSpan.FromMinutes(10));
        RuleFor(o => o.PurgeMaxWait).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromDays(1));
        RuleFor(o => o.Sweep.Interval).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromDays(7));
        RuleFor(o => o.Sweep.BatchSize).InclusiveBetween(1, 10_000);
        RuleFor(o => o.Sweep.MaxInFlight).InclusiveBetween(1, 1000);
        RuleFor(o => o.Sweep.JobWait).InclusiveBetween(TimeSpan.FromSeconds(1), TimeSpan.FromHours(6));
        RuleFor(o => o.Sweep.NoticeSettle).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromDays(1));
        RuleFor(o => o.MaxPageSize).InclusiveBetween(1, 10_000);
        RuleFor(o => o.DefaultPageSize).GreaterThan(0).LessThanOrEqualTo(o => o.MaxPageSize).WithMessage("must be between 1 and MaxPageSize.");
        RuleFor(o => o.BacklogRefreshInterval).InclusiveBetween(TimeSpan.FromSeconds(1), TimeSpan.FromHours(1));

        RuleForEach(o => o.Variants).ChildRules(variant =>
        {
            variant.RuleFor(v => v.Key).Must(k => !string.IsNullOrWhiteSpace(k) && !SummariesOptions.IsDefaultVariant(k))
                .WithMessage("variant names must not be empty or 'default'.");
            variant.RuleFor(v => v.Value.Milestones).Must(m => SummariesOptions.TryParseMilestones(m, out _))
                .When(v => v.Value.Milestones is not null).WithMessage("must list positive, strictly ascending message counts separated by commas.");
            variant.RuleFor(v => v.Value.RepeatEvery).InclusiveBetween(1, 1_000_000).When(v => v.Value.RepeatEvery is not null);
            variant.RuleFor(v => v.Value.TokenThreshold).InclusiveBetween(1, 10_000_000).When(v => v.Value.TokenThreshold is not null);
            variant.RuleFor(v => v.Value.MinInterval).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromDays(7)).When(v => v.Value.MinInterval is not null);
            variant.RuleFor(v => v.Value.Summarizer).Must(s => Summarizers.Contains(s)).When(v => v.Value.Summarizer is not null)
                .WithMessage("must be 'extractive' or 'llm'.");
            variant.RuleFor(v => v.Value.MaxSummaryTokens).InclusiveBetween(32, 100_000).When(v => v.Value.MaxSummaryTokens is not null);
            variant.RuleFor(v => v.Value.ChunkSize).InclusiveBetween(1, 10_000).When(v => v.Value.ChunkSize is not null);
            variant.RuleFor(v => v.Value.Model).NotEmpty().When(v => v.Value.Model is not null);
            variant.RuleFor(v => v.Value.SystemPrompt).NotEmpty().When(v => v.Value.SystemPrompt is not null);
            variant.RuleFor(v => v.Value.PromptVersion).NotEmpty().When(v => v.Value.PromptVersion is not null);
        }).OverridePropertyName("Variants");

        RuleForEach(o => o.TenantVariants)
            .Must((o, pair) => SummariesOptions.IsDefaultVariant(pair.Value) || o.Variants.ContainsKey(pair.Value))
            .WithMessage((o, pair) => $"tenant '{pair.Key}' is on variant '{pair.Value}', which is not defined under Summaries:Variants.")
            .OverridePropertyName("TenantVariants");
    }
}
