using System.Diagnostics;
using JasperFx;
using JasperFx.CodeGeneration;
using Marten.Exceptions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Jobs;
using Wolverine;
using Wolverine.Configuration;
using Wolverine.ErrorHandling;
using Wolverine.Runtime;
using Wolverine.Runtime.Handlers;

namespace ModularChat.Summaries;

/// <summary>
/// The module's Wolverine settings that depend on its options (applied when Wolverine starts): the batched subscription
/// to message events, the job queue's parallelism, and the jobs' retries and timeout.
/// </summary>
internal sealed class SummariesMessaging(IOptions<SummariesOptions> options) : IWolverineExtension
{
    public const string JobQueue = "summaries-jobs";

    public void Configure(WolverineOptions wolverine)
    {
        var o = options.Value;
        if (o.Enabled)
        {
            // Each append transaction commits one AppendsCommitted notice through the outbox (ADR 0004); the notices are
            // handled in batches, one transaction per batch and tenant, in order on each node.
            wolverine.BatchMessagesOf<AppendsCommitted>(batching =>
                {
                    batching.BatchSize = o.EventBatchSize;
                    batching.TriggerTime = o.EventBatchWindow;
                })
                .Sequential();
        }
        else
        {
            // Without the handler (and the notice) appends forward nothing to this module.
            wolverine.Discovery.CustomizeHandlerDiscovery(q => q.Excludes.WithCondition("Summaries:Enabled is false", t => t == typeof(AppendCommittedHandler)));
        }

        wolverine.PublishMessage<SummarizeConversation>().ToLocalQueue(JobQueue);
        var jobs = wolverine.LocalQueue(JobQueue).UseDurableInbox();
        if (o.JobParallelism == 1)
        {
            jobs.Sequential();
        }
        else
        {
            // Jobs of one conversation never run at once on a node: a duplicate waits its turn and then finds its range
            // covered (a cheap no-op) instead of summarizing the same messages again and losing the race at the end.
            wolverine.MessagePartitioning.ByMessage<SummarizeConversation>(job => job.ConversationId.ToString("N"));
            jobs.PartitionProcessingByGroupId(o.JobParallelism switch
            {
                <= 3 => PartitionSlots.Three,
                <= 5 => PartitionSlots.Five,
                <= 7 => PartitionSlots.Seven,
                _ => PartitionSlots.Nine,
            });
        }
        SummariesOptions.TryParseDelays(o.RetryDelays, out var delays);
        wolverine.Policies.Add(new SummaryFailurePolicy(delays, o.JobTimeout));
    }

    /// <summary>
    /// Jobs: retries with growing delays, then the dead-letter store; a lost race with another writer retries at once (and
    /// finds nothing to do), three times in a row at most, then the dead-letter store too. Batches of append notices: the same
    /// shape, with five lost races and <see cref="NoticeBatchFailures.RetryDelays"/>, each kind counting its own failures
    /// (<see cref="NoticeBatchFailures.Retries"/>), the database away left to <see cref="DatabaseOutages"/>.
    /// </summary>
    private sealed class SummaryFailurePolicy(TimeSpan[] delays, TimeSpan timeout) : IHandlerPolicy
    {
        public void Apply(IReadOnlyList<HandlerChain> chains, GenerationRules rules, IServiceContainer container)
        {
            foreach (var chain in chains)
            {
                if (chain.MessageType == typeof(SummarizeConversation))
                {
                    chain.ExecutionTimeoutInSeconds = (int)Math.Ceiling(timeout.TotalSeconds);
                    // The writer logs each failed attempt once, naming the conversation (a warning; the last one, which
                    // dead-letters the job, an error): Wolverine's own entry for it, with the same stack trace, is a debug one.
                    // A lost race at the commit, retried at once below, is routine.
                    chain.FailureLogLevel = LogLevel.Debug;
                    // Attempts count across both rules: lost races retried at once use up attempts of the retry delays.
                    ReportedFirst.Around(chain, chain.OnException(IsConcurrentWrite, "another writer got there first").RetryTimes(3), SummariesMetrics.Conflict, ToWriter);
                    // The database away included (unlike other handlers, DatabaseOutages): each attempt may call the model
                    // again, so a job does not do so every 30 s for as long as the database stays away or slow; the sweep
                    // and a replay from the dead-letter store bring it back.
                    ReportedFirst.Around(chain, chain.OnException<Exception>().ScheduleRetry(delays), SummariesMetrics.Retry, ToWriter);
                }
                else if (chain.MessageType == typeof(AppendsCommitted[]))
                {
                    // Each attempt's failure is one entry of the module's, naming the tenant and the conversations
                    // (NoticeBatchFailures): Wolverine's own, with the message type only and a stack trace, is a debug one.
                    chain.FailureLogLevel = LogLevel.Debug;
                    // Each node follows its own appends, so two nodes update the same conversation's activity now and then: the
                    // loser retries at once (and finds the row the other wrote), a routine race logged in one line.
                    chain.OnException(IsConcurrentWrite, "another node updated the same conversation").ContinueWith(new NoticeBatchFailures.Retries(race: true));
                    // Anything else but the database away (left to DatabaseOutages, which waits for it): a few pauses (Wolverine
                    // holds the batch in memory meanwhile), then the dead-letter store; without this rule the first such failure
                    // dead-lettered the batch. Each rule counts its own failures: not the other's, nor the outage's put-backs.
                    chain.OnException(e => !DatabaseOutages.IsDatabaseAway(e), "not the database away").ContinueWith(new NoticeBatchFailures.Retries(race: false));
                }
            }
        }

        /// <summary>Logs and counts a failed attempt, with the step's outcome, and marks the envelope (<see cref="HandlerFailureLog"/>).</summary>
        private delegate void FailureReport(IServiceProvider services, Envelope envelope, Exception exception, string outcome);

        /// <summary>The summary writer logs and counts a job's failure it did not see (<see cref="SummaryWriter.FailedAtCommit"/>).</summary>
        private static void ToWriter(IServiceProvider services, Envelope envelope, Exception exception, string outcome)
            => services.GetRequiredService<SummaryWriter>().FailedAtCommit(envelope, exception, outcome);

        /// <summary>
        /// The writer logs and counts the failures of its attempts, but the commit of the job's transaction (Wolverine's,
        /// after the writer returned: a lost race, the database going away) failed without a word from it and was not
        /// counted. Each step of the job's retries first hands such a failure to the writer (<see cref="SummaryWriter.FailedAtCommit"/>),
        /// which logs and counts it as its own, with the step's outcome; Wolverine's entries for it then stay below Warning
        /// (<see cref="HandlerFailureLog"/>), as for the failures the writer sees.
        /// </summary>
        private sealed class ReportedFirst(string outcome, FailureReport report, bool deadLetters = false) : IContinuationSource
        {
            public string Description => deadLetters
                ? $"log and count the failure ({outcome}), then move the message to the dead-letter store"
                : $"log and count the failure ({outcome})";

            /// <summary>
            /// Hands the failure at each step of <paramref name="retries"/> (the chain's last rule) to <paramref name="report"/>
            /// first, with <paramref name="outcome"/>, then ends the rule: the attempt after its last step, and any later one,
            /// dead-letters the message, the failure reported as its last (<see cref="SummariesMetrics.DeadLetter"/>, at Error).
            /// Past a rule's last step Wolverine dead-lettered the message itself, and nobody logged nor counted it: a 4th lost
            /// race in a row, or a failure at an attempt beyond the retry delays' steps because lost races had used up attempts.
            /// </summary>
            public static void Around(HandlerChain chain, IAdditionalActions retries, string outcome, FailureReport report)
            {
                foreach (var step in chain.Failures.Last())
                {
                    step.InsertSourceAtTop(new ReportedFirst(outcome, report));
                }

                retries.Then.ContinueWith(new ReportedFirst(SummariesMetrics.DeadLetter, report, deadLetters: true));
            }

            public IContinuation Build(Exception ex, Envelope envelope)
                => new Reported(ex, outcome, report, deadLetters ? ReportedDeadLetters.Move(ex, envelope) : null);

            /// <summary>The report of the failure (unless the handler logged it itself), then <paramref name="then"/>, if any.</summary>
            private sealed class Reported(Exception exception, string outcome, FailureReport report, IContinuation? then) : IContinuation
            {
                public async ValueTask ExecuteAsync(IEnvelopeLifecycle lifecycle, IWolverineRuntime runtime, DateTimeOffset now, Activity? activity)
                {
                    if (lifecycle.Envelope is { } envelope && !HandlerFailureLog.WasLogged(envelope))
                    {
                        report(runtime.Services, envelope, exception, outcome);
                    }

                    if (then is not null)
                    {
                        await then.ExecuteAsync(lifecycle, runtime, now, activity);
                    }
                }
            }
        }

        private static bool IsConcurrentWrite(Exception e) => e switch
        {
            ConcurrencyException or ExistingStreamIdCollisionException or DocumentAlreadyExistsException => true,
            AggregateException a => a.InnerExceptions.All(IsConcurrentWrite),
            _ => false,
        };
    }
}
