using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Wolverine;
using Wolverine.ErrorHandling;
using Wolverine.ErrorHandling.Matches;
using Wolverine.Runtime;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>
/// Moves to the dead-letter store with the module's own entry and count (<see cref="IDeadLetterReport"/>): the reports are
/// asked by <see cref="DatabaseOutages"/> and by a handler's own failure rule that ends in <see cref="MoveToErrorQueueReported"/>,
/// in place of Wolverine's <c>MoveToErrorQueue()</c>, whose entry names only the message type and the envelope.
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
