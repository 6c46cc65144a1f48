using System.Diagnostics;
using System.Diagnostics.Metrics;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Telemetry;

namespace ModularChat.Summaries;

/// <summary>The Summaries module's instruments (one set per process). Every summary figure is tagged with the variant, for A/B comparisons.</summary>
public sealed class SummariesMetrics
{
    private readonly Histogram<double> _duration;
    private readonly Counter<long> _generated;
    private readonly Counter<long> _failures;
    private readonly Histogram<double> _lag;
    private readonly Counter<long> _parts;
    private readonly Counter<long> _deferrals;
    private readonly Counter<long> _noticeFailures;
    private readonly Counter<long> _cleanupFailures;
    private long _backlog = -1;

    public SummariesMetrics(IMeterFactory meters)
    {
        var meter = meters.Create(ModularChatTelemetry.SourceName);
        _duration = meter.CreateHistogram<double>(MetricNames.SummaryDuration, "s", "Time to write one summary revision");
        _generated = meter.CreateCounter<long>(MetricNames.SummariesGenerated, "{summary}", "Summary revisions written");
        _failures = meter.CreateCounter<long>(MetricNames.SummaryFailures, "{failure}",
            "Failed summarization attempts (outcome: retry, or dead_letter for the last one, which gives the job up: one per dead-lettered job; " +
            "conflict for a commit that lost a race with another writer of the same revision, retried at once, 3 times in a row at most: a 4th is the job's dead_letter)");
        _parts = meter.CreateCounter<long>(MetricNames.SummaryParts, "{revision}",
            "Revisions stored part way through a backlog, the rest queued (stopped_by: max_chunks, or job_time when half the job timeout had gone)");
        _deferrals = meter.CreateCounter<long>(MetricNames.SummaryDeferrals, "{job}",
            "Jobs put off before they read anything (reason: tenant_share when the tenant ran its share of the node's job slots, burst during a bulk import, " +
            "node_stopping when the node had begun to stop)");
        _noticeFailures = meter.CreateCounter<long>(MetricNames.SummaryNoticeFailures, "{attempt}",
            "Failed attempts of a batch of append notices (one transaction per batch and tenant) to update the conversations' activity " +
            "(outcome: conflict for a lost race with another node, retried at once, 5 times at most; retry for any other failure " +
            "but the database away, retried after a pause; dead_letter for the last one, which gives the batch up: one per dead-lettered batch)");
        _cleanupFailures = meter.CreateCounter<long>(MetricNames.SummaryCleanupFailures, "{message}",
            "Clean-ups of a deleted conversation's summaries given up (outcome: dead_letter, after Messaging:MaxAttemptsWhileDatabaseAnswers database errors " +
            "while the database answered, or the retries of any other failure), by work (deletion: its rows; verify: the check that it still exists; purge: its summary stream) and error");
        _lag = meter.CreateHistogram<double>(MetricNames.SummaryLag, "s", "From the commit of the message that made a summary due to the revision that covers it");
        meter.CreateObservableGauge(MetricNames.SummaryBacklog, () => Volatile.Read(ref _backlog) is var b and >= 0 ? [new Measurement<long>(b)] : Array.Empty<Measurement<long>>(),
            "{conversation}", "Conversations with a summary queued and not yet written");
    }

    /// <summary>The last backlog count (-1 before the first count).</summary>
    public long Backlog => Volatile.Read(ref _backlog);

    public void Generated(string variant, string summarizer, string model, string reason, TimeSpan duration, TimeSpan? lag)
    {
        var tags = new TagList
        {
            { "variant", variant },
            { "summarizer", summarizer },
            { "model", model },
            { "reason", ReasonKind(reason) },
        };
        _generated.Add(1, tags);
        _duration.Record(duration.TotalSeconds, tags);
        if (lag is { } l)
        {
            _lag.Record(Math.Max(0, l.TotalSeconds), tags);
        }
    }

    /// <summary>A job stored its revision part way and queued the rest (<paramref name="stoppedBy"/>: max_chunks or job_time).</summary>
    public void StoppedPartWay(string variant, string stoppedBy) => _parts.Add(1, new TagList { { "variant", variant }, { "stopped_by", stoppedBy } });

    /// <summary>A job put itself off before reading anything (<paramref name="reason"/>: tenant_share, burst or node_stopping).</summary>
    public void Deferred(string variant, string reason) => _deferrals.Add(1, new TagList { { "variant", variant }, { "reason", reason } });

    /// <summary>The <c>outcome</c> of a failed attempt that is retried later.</summary>
    public const string Retry = "retry";

    /// <summary>The <c>outcome</c> of the last failed attempt, which dead-letters the job.</summary>
    public const string DeadLetter = IDeadLetterReport.Outcome;

    /// <summary>The <c>outcome</c> of an attempt whose commit lost a race with another writer of the same revision (retried at once, which finds it written).</summary>
    public const string Conflict = "conflict";

    /// <summary>A failed attempt (<paramref name="outcome"/>: <see cref="Retry"/>, <see cref="DeadLetter"/> or <see cref="Conflict"/>).</summary>
    public void Failed(string variant, string error, string outcome)
        => _failures.Add(1, new TagList { { "variant", variant }, { "error", error }, { "outcome", outcome } });

    /// <summary>
    /// A failed attempt of a batch of append notices (<paramref name="outcome"/>: <see cref="Conflict"/>, <see cref="Retry"/> or
    /// <see cref="DeadLetter"/>). Not a summarization failure: a dead-lettered batch leaves no job to replay, the sweep
    /// catches its conversations' activity up, so it is counted apart from <see cref="Failed"/>.
    /// </summary>
    public void NoticeBatchFailed(string variant, string error, string outcome)
        => _noticeFailures.Add(1, new TagList { { "variant", variant }, { "error", error }, { "outcome", outcome } });

    /// <summary>A clean-up of <paramref name="work"/> (deletion, verify, purge) dead-lettered after <paramref name="error"/>.</summary>
    public void CleanupFailed(string work, string error)
        => _cleanupFailures.Add(1, new TagList { { "work", work }, { "error", error }, { "outcome", DeadLetter } });

    public void BacklogCounted(long conversations) => Volatile.Write(ref _backlog, conversations);

    /// <summary>"milestone:50" and "milestone:100" are one series: the milestone value would make the tag unbounded.</summary>
    private static string ReasonKind(string reason)
    {
        var colon = reason.IndexOf(':', StringComparison.Ordinal);
        return colon < 0 ? reason : reason[..colon];
    }
}
