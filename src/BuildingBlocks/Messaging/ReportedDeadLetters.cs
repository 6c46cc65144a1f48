using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Wolverine;
using Wolverine.ErrorHandling;
using Wolverine.ErrorHandling.Matches;
using Wolverine.Runtime;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>
/// Moves to the dead-letter store with the module's own entry and count (<see cref="IDeadLetterReport"/>): the reports are
/// asked by <see cref="DatabaseOutages"/> and by a failure rule that ends in <see cref="MoveToErrorQueueReported"/> (every
/// handler's last, <see cref="RetryOtherFailures"/>), in place of Wolverine's <c>MoveToErrorQueue()</c>, whose entry names
/// only the message type and the envelope.
/// </summary>
public static class ReportedDeadLetters
{
    /// <summary>
    /// What a failure rule answers for an attempt it has no step for: Wolverine's own move to the dead-letter store
    /// (FailureRule.TryCreateContinuation; its MoveToErrorQueue is internal), asked here of a rule with no step.
    /// </summary>
    private static readonly FailureRule NoStep = new(new AnyFailure());

    /// <summary>Wolverine's own move of <paramref name="envelope"/> to the dead-letter store, for <paramref name="exception"/>.</summary>
    public static IContinuation Move(Exception exception, Envelope envelope)
        => NoStep.TryCreateContinuation(exception, envelope, out var move) ? move : throw new UnreachableException();

    /// <summary>The report registered for <paramref name="envelope"/>'s message (and handler), if any.</summary>
    public static IDeadLetterReport? ReportFor(IServiceProvider services, Envelope envelope)
        => services.GetServices<IDeadLetterReport>().FirstOrDefault(r => r.Reports(envelope));

    /// <summary>The pauses before the retries of <see cref="RetryOtherFailures"/>.</summary>
    private static readonly TimeSpan[] OtherFailureRetries = [TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5)];

    /// <summary>
    /// The rule for every handler whose own rules do not take a failure, and that is not the database away
    /// (<see cref="DatabaseOutages"/>, registered before this one): three retries (<see cref="OtherFailureRetries"/>),
    /// then the dead-letter store, reported by the message's <see cref="IDeadLetterReport"/>. Without it Wolverine
    /// dead-lettered such a message at its first failure (it retries only when told to), and said no more than its type:
    /// the purges, Summaries' clean-ups and the check that a conversation still exists. A handler's own rule that matches
    /// takes the failure whatever its attempts (Wolverine's FailureRule), so this one never adds to its retries.
    /// </summary>
    public static void RetryOtherFailures(this WolverineOptions options)
        => options.Policies.OnAnyException().RetryWithCooldown(OtherFailureRetries).MoveToErrorQueueReported();

    /// <summary>
    /// Ends a handler's failure rule: past its retries, the message's report (if one is registered for it) logs and counts
    /// the last failure, then the message goes to the dead-letter store as with <c>MoveToErrorQueue()</c>.
    /// </summary>
    public static void MoveToErrorQueueReported(this IAdditionalActions retries) => retries.Then.ContinueWith(new Source());

    private sealed class Source : IContinuationSource
    {
        public string Description => "log and count the failure by the message's dead-letter report, then move the message to the dead-letter store";

        public IContinuation Build(Exception ex, Envelope envelope) => new Reported(ex, Move(ex, envelope));
    }

    private sealed class Reported(Exception exception, IContinuation move) : IContinuation
    {
        public ValueTask ExecuteAsync(IEnvelopeLifecycle lifecycle, IWolverineRuntime runtime, DateTimeOffset now, Activity? activity)
        {
            if (lifecycle.Envelope is { } envelope && ReportFor(runtime.Services, envelope) is { } report)
            {
                report.DeadLettered(envelope, exception);
            }

            return move.ExecuteAsync(lifecycle, runtime, now, activity);
        }
    }

    private sealed class AnyFailure : IExceptionMatch
    {
        public string Description => "any exception";

        public bool Matches(Exception ex) => true;
    }
}
