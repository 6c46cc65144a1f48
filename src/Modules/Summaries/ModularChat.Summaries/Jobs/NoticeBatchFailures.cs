using System.Diagnostics;
using System.Globalization;
using JasperFx;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;
using Wolverine;
using Wolverine.ErrorHandling;
using Wolverine.Runtime;

namespace ModularChat.Summaries.Jobs;

/// <summary>
/// Logs and counts the failed attempts of a batch of append notices (<see cref="AppendsCommitted"/>[], one transaction per
/// batch and tenant; SummariesMessaging hands them over), once each, naming the tenant and the conversations whose activity
/// the batch updates. Wolverine's own entries named only the message type and the envelope: after six lost races a batch
/// was dead-lettered with six warnings and an error, none saying which conversations' activity was lost, nor that the
/// summary sweep makes it good. Marks the envelope so Wolverine's entries for the same attempt stay below Warning
/// (<see cref="HandlerFailureLog"/>). Also reports a batch that <see cref="DatabaseOutages"/> dead-letters after failing
/// while the database answered (<see cref="IDeadLetterReport"/>): its generic error named only the message type and the
/// envelope, and the batch was not counted.
/// </summary>
public sealed partial class NoticeBatchFailures(
    SummariesMetrics metrics, SummarySettingsResolver settingsResolver, IOptions<SummariesOptions> options, ILogger<NoticeBatchFailures> logger)
    : IDeadLetterReport
{
    /// <summary>
    /// The pauses before a batch that failed otherwise than by a lost race or the database away is tried again (a transient
    /// failure, a bug fixed by a deployment); after the last, it is dead-lettered. Fixed: a batch is cheap, and the sweep
    /// catches a dead-lettered one up. Wolverine keeps a batch to retry in memory: the sequential queue of notices goes on meanwhile.
    /// </summary>
    internal static readonly TimeSpan[] RetryDelays = [TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(30)];

    /// <summary>Lost races with another node retried at once, at most; the next dead-letters the batch.</summary>
    internal const int RaceRetries = 5;

    /// <summary>The envelope header counting a batch's lost races (kept while the node holds the batch).</summary>
    internal const string LostRacesHeader = "modularchat-notice-lost-races";

    /// <summary>The envelope header counting a batch's failures that are neither a lost race nor the database away.</summary>
    internal const string FailuresHeader = "modularchat-notice-failures";

    /// <summary>Conversations named in one entry; the rest are counted.</summary>
    internal const int NamedConversations = 10;

    /// <summary>
    /// The one entry and count of the failed attempt of the batch on <paramref name="envelope"/>, by its <paramref name="outcome"/>:
    /// a lost race at Information (one line: routine, retried at once), a retry (in <paramref name="retryIn"/>) at Warning,
    /// the last attempt (the batch dead-lettered) at Error, saying what brings the conversations' activity back.
    /// </summary>
    private void Report(Envelope envelope, Exception failure, string outcome, TimeSpan retryIn = default)
    {
        var tenant = envelope.TenantId ?? StorageConstants.DefaultTenantId;
        var notices = envelope.Message as AppendsCommitted[] ?? [];
        var conversations = Named(notices.SelectMany(n => n.Appends).Select(a => a.ConversationId).Distinct().Order().ToList());
        metrics.NoticeBatchFailed(settingsResolver.For(tenant).Variant, failure.GetType().Name, outcome);
        switch (outcome)
        {
            case SummariesMetrics.Conflict:
                LogLostRace(logger, conversations, tenant, notices.Length, envelope.Attempts, failure.Message);
                break;
            case SummariesMetrics.DeadLetter:
                var sweep = options.Value.Sweep;
                if (sweep.Interval > TimeSpan.Zero)
                {
                    LogDeadLettered(logger, failure, conversations, tenant, notices.Length, envelope.Attempts, sweep.Interval, sweep.NoticeSettle, failure.Message);
                }
                else
                {
                    LogDeadLetteredWithoutSweep(logger, failure, conversations, tenant, notices.Length, envelope.Attempts, failure.Message);
                }

                break;
            default:
                LogFailed(logger, failure, conversations, tenant, notices.Length, envelope.Attempts, retryIn.TotalSeconds);
                break;
        }

        HandlerFailureLog.MarkLogged(envelope);
    }

    /// <inheritdoc />
    Type IDeadLetterReport.MessageType => typeof(AppendsCommitted[]);

    /// <summary>
    /// A batch given up, here or by <see cref="DatabaseOutages"/>: one error and count. Its counts of failures go: stored with
    /// the batch, a replay starts counting afresh.
    /// </summary>
    public void DeadLettered(Envelope envelope, Exception exception)
    {
        envelope.Headers.Remove(LostRacesHeader);
        envelope.Headers.Remove(FailuresHeader);
        Report(envelope, exception, SummariesMetrics.DeadLetter);
    }

    /// <summary>The first <see cref="NamedConversations"/> ids, and how many more there are.</summary>
    internal static string Named(IReadOnlyList<Guid> ids)
        => ids.Count <= NamedConversations
            ? string.Join(", ", ids)
            : $"{string.Join(", ", ids.Take(NamedConversations))} and {ids.Count - NamedConversations} more";

    /// <summary>
    /// The step of a batch's failure rule, at every attempt, for a lost race (<c>race</c>) or for any other failure
    /// but the database away: counts the failures of its kind in the envelope's headers and retries the batch (at once, or
    /// after the <see cref="RetryDelays"/> step its count reaches) until one too many dead-letters it, reporting each. Not
    /// Wolverine's RetryTimes and ScheduleRetry: their steps go by the envelope's attempts, which count every attempt, the
    /// other kind's failures and <see cref="DatabaseOutages"/>' put-backs while the database was away included, so a batch that
    /// had waited through an outage was dead-lettered at its first lost race or other failure afterwards, never retried.
    /// </summary>
    internal sealed class Retries(bool race) : IContinuationSource
    {
        public string Description => race
            ? $"log and count the lost race, retry at once ({RaceRetries} times at most), then move the message to the dead-letter store"
            : $"log and count the failure, retry after {string.Join(", ", RetryDelays.Select(d => d.TotalSeconds.ToString(CultureInfo.InvariantCulture) + " s"))}, then move the message to the dead-letter store";

        public IContinuation Build(Exception ex, Envelope envelope) => new Step(ex, race);

        private sealed class Step(Exception exception, bool race) : IContinuation
        {
            public async ValueTask ExecuteAsync(IEnvelopeLifecycle lifecycle, IWolverineRuntime runtime, DateTimeOffset now, Activity? activity)
            {
                var envelope = lifecycle.Envelope!;
                var failures = runtime.Services.GetRequiredService<NoticeBatchFailures>();
                var count = EnvelopeCounters.Increment(envelope, race ? LostRacesHeader : FailuresHeader);
                if (race && count <= RaceRetries)
                {
                    // What Wolverine's RetryTimes does.
                    failures.Report(envelope, exception, SummariesMetrics.Conflict);
                    activity?.AddEvent(new ActivityEvent(WolverineTracing.EnvelopeRetry));
                    await lifecycle.RetryExecutionNowAsync();
                }
                else if (!race && count <= RetryDelays.Length)
                {
                    // What Wolverine's ScheduleRetry does (it keeps a batch in memory meanwhile).
                    var delay = RetryDelays[count - 1];
                    failures.Report(envelope, exception, SummariesMetrics.Retry, delay);
                    activity?.AddEvent(new ActivityEvent(WolverineTracing.ScheduledRetry));
                    await lifecycle.ReScheduleAsync(now.Add(delay));
                }
                else
                {
                    failures.DeadLettered(envelope, exception);
                    await ReportedDeadLetters.Move(exception, envelope).ExecuteAsync(lifecycle, runtime, now, activity);
                }
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Information,
        Message = "The activity of conversations {ConversationIds} of tenant {TenantId} ({Appends} append(s)) lost a race with another node on attempt {Attempt}: retried at once ({Error})")]
    private static partial void LogLostRace(ILogger logger, string conversationIds, string tenantId, int appends, int attempt, string error);

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "Updating the activity of conversations {ConversationIds} of tenant {TenantId} ({Appends} append(s)) failed on attempt {Attempt}: retried in {RetryInSeconds} s")]
    private static partial void LogFailed(ILogger logger, Exception exception, string conversationIds, string tenantId, int appends, int attempt, double retryInSeconds);

    [LoggerMessage(Level = LogLevel.Error,
        Message = "Updating the activity of conversations {ConversationIds} of tenant {TenantId} ({Appends} append(s)) failed on attempt {Attempt}, the last: " +
                  "the notices are dead-lettered; the summary sweep (every {SweepInterval}) brings the activity of those conversations quiet for " +
                  "{NoticeSettle} up to date and queues the summaries they need (replaying the notices is optional): {Error}")]
    private static partial void LogDeadLettered(
        ILogger logger, Exception exception, string conversationIds, string tenantId, int appends, int attempt, TimeSpan sweepInterval, TimeSpan noticeSettle, string error);

    [LoggerMessage(Level = LogLevel.Error,
        Message = "Updating the activity of conversations {ConversationIds} of tenant {TenantId} ({Appends} append(s)) failed on attempt {Attempt}, the last: " +
                  "the notices are dead-lettered; the scheduled summary sweep is off (Summaries:Sweep:Interval is 0): the activity of those conversations misses " +
                  "these appends until a sweep is run (POST /api/admin/summaries/sweep, or the summaries command) or the notices are replayed: {Error}")]
    private static partial void LogDeadLetteredWithoutSweep(
        ILogger logger, Exception exception, string conversationIds, string tenantId, int appends, int attempt, string error);
}
