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
using Wolverine.ErrorHandling.Matches;
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
    /// Retries with growing delays, then the dead-letter store; a lost race with another writer retries at once (and finds
    /// nothing to do), three times in a row at most, then the dead-letter store too.
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
                    UnseenByWriter.Around(chain, chain.OnException(IsConcurrentWrite, "another writer got there first").RetryTimes(3), SummariesMetrics.Conflict);
                    // The database away included (unlike other handlers, DatabaseOutages): each attempt may call the model
                    // again, so a job does not do so every 30 s for as long as the database stays away or slow; the sweep
                    // and a replay from the dead-letter store bring it back.
                    UnseenByWriter.Around(chain, chain.OnException<Exception>().ScheduleRetry(delays), SummariesMetrics.Retry);
                }
                else if (chain.MessageType == typeof(AppendsCommitted[]))
                {
                    // Each node follows its own appends, so two nodes update the same conversation's activity now and then: the
                    // loser retries at once, a routine race logged as a warning. Should every retry lose, Wolverine moves the
                    // batch to the dead-letter store and logs that as an error.
                    chain.FailureLogLevel = LogLevel.Warning;
                    chain.OnException(IsConcurrentWrite, "another node updated the same conversation").RetryTimes(5);
                }
            }
        }

        /// <summary>
        /// The writer logs and counts the failures of its attempts, but the commit of the job's transaction (Wolverine's,
        /// after the writer returned: a lost race, the database going away) failed without a word from it and was not
        /// counted. Each step of the job's retries first hands such a failure to the writer (<see cref="SummaryWriter.FailedAtCommit"/>),
        /// which logs and counts it as its own, with the step's outcome; Wolverine's entries for it then stay below Warning
        /// (<see cref="HandlerFailureLog"/>), as for the failures the writer sees.
        /// </summary>
        private sealed class UnseenByWriter(string outcome, bool deadLetters = false) : IContinuationSource
        {
            /// <summary>
            /// What a failure rule answers for an attempt it has no step for: Wolverine's own move to the dead-letter store
            /// (FailureRule.TryCreateContinuation; its MoveToErrorQueue is internal), asked here of a rule with no step.
            /// </summary>
            private static readonly FailureRule NoStep = new(new AnyFailure());

            public string Description => deadLetters
                ? $"log and count a failure the summary writer did not see ({outcome}), then move the job to the dead-letter store"
                : $"log and count a failure the summary writer did not see ({outcome})";

            /// <summary>
            /// Hands the failure at each step of <paramref name="retries"/> (the chain's last rule) to the writer first, with
            /// <paramref name="outcome"/>, then ends the rule: the attempt after its last step, and any later one, dead-letters
            /// the job, the failure reported as the job's last (<see cref="SummariesMetrics.DeadLetter"/>, at Error). Past a
            /// rule's last step Wolverine dead-lettered the job itself, and the writer neither logged nor counted it: a 4th lost
            /// race in a row, or a failure at an attempt beyond the retry delays' steps because lost races had used up attempts.
            /// </summary>
            public static void Around(HandlerChain chain, IAdditionalActions retries, string outcome)
            {
                foreach (var step in chain.Failures.Last())
                {
                    step.InsertSourceAtTop(new UnseenByWriter(outcome));
                }

                retries.Then.ContinueWith(new UnseenByWriter(SummariesMetrics.DeadLetter, deadLetters: true));
            }

            public IContinuation Build(Exception ex, Envelope envelope)
                => new Reported(ex, outcome, deadLetters && NoStep.TryCreateContinuation(ex, envelope, out var move) ? move : null);

            /// <summary>The writer's report of the failure (unless it logged it itself), then <paramref name="then"/>, if any.</summary>
            private sealed class Reported(Exception exception, string outcome, IContinuation? then) : IContinuation
            {
                public async ValueTask ExecuteAsync(IEnvelopeLifecycle lifecycle, IWolverineRuntime runtime, DateTimeOffset now, Activity? activity)
                {
                    if (lifecycle.Envelope is { } envelope && !HandlerFailureLog.WasLogged(envelope))
                    {
                        runtime.Services.GetRequiredService<SummaryWriter>().FailedAtCommit(envelope, exception, outcome);
                    }

                    if (then is not null)
                    {
                        await then.ExecuteAsync(lifecycle, runtime, now, activity);
                    }
                }
            }

            private sealed class AnyFailure : IExceptionMatch
            {
                public string Description => "any exception";

                public bool Matches(Exception ex) => true;
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
