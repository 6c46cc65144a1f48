using System.Globalization;
using JasperFx;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Persistence;
using Npgsql;
using Wolverine;
using Wolverine.ErrorHandling;
using Wolverine.Runtime;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>
/// A database that is away for a while (a restart, a failover, the network) fails whatever a message handler does, through
/// no fault of the message. Wolverine's default (three attempts at once, then the dead-letter store) dropped such messages
/// within a second of an outage: an append's notice to Summaries among them, so the conversation's activity missed those
/// messages and its summary came late or never. Every handler waits for the database instead and tries again, with a
/// growing pause (at most <see cref="MaxPause"/>), as long as the database does not answer; handlers' own failure rules
/// leave these failures to this one (<see cref="IsDatabaseAway"/>). Except summary jobs: each attempt may call the model
/// again, so they keep their bounded retries, then the dead-letter store.
/// </summary>
/// <remarks>
/// The same errors also come from a database that answers: a statement past its command timeout (data locked for good, a
/// runaway query), a deadlock. Those may be the message's own doing and would otherwise be tried every 30 s forever, so
/// after each failure the database is asked <c>select 1</c>: a failure while it answers counts, and the
/// <see cref="MaxAttemptsWhileUp"/>-th sends the message to the dead-letter store like any other failure (an error in the
/// log, the module's own for a message type it reports, <see cref="IDeadLetterReport"/>; replayable). Failures while it does
/// not answer never count.
/// </remarks>
public static class DatabaseOutages
{
    /// <summary>The longest pause between two attempts while the database stays away.</summary>
    public static readonly TimeSpan MaxPause = TimeSpan.FromSeconds(30);

    /// <summary>How long the database has to answer <c>select 1</c> after a failure before it counts as away.</summary>
    public static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(5);

    /// <summary>The default of <c>Messaging:MaxAttemptsWhileDatabaseAnswers</c>.</summary>
    public const int MaxAttemptsWhileUp = 10;

    /// <summary>The envelope header counting a message's failures while the database answered (on this node, since it claimed the message).</summary>
    public const string FailuresWhileUpHeader = "modularchat-database-failures-while-up";

    /// <summary>The envelope header that holds the attempt after which the message waits because the database did not answer.</summary>
    public const string WaitsForTheDatabaseHeader = "modularchat-waits-for-the-database";

    /// <summary>
    /// A failure that another attempt may not meet: Npgsql's transient errors (the connection refused, broken or timed
    /// out; a deadlock or serialization failure), also when Marten or Wolverine wrapped them.
    /// </summary>
    public static bool IsDatabaseAway(Exception exception) => exception switch
    {
        NpgsqlException { IsTransient: true } => true,
        AggregateException aggregate => aggregate.InnerExceptions.Count > 0 && aggregate.InnerExceptions.All(IsDatabaseAway),
        { InnerException: { } inner } => IsDatabaseAway(inner),
        _ => false,
    };

    /// <summary>The pause before attempt <paramref name="attempts"/> + 1: 0.25 s, 1 s, 5 s, 15 s, then <see cref="MaxPause"/>.</summary>
    public static TimeSpan PauseAfter(int attempts) => attempts switch
    {
        <= 1 => TimeSpan.FromMilliseconds(250),
        2 => TimeSpan.FromSeconds(1),
        3 => TimeSpan.FromSeconds(5),
        4 => TimeSpan.FromSeconds(15),
        _ => MaxPause,
    };

    /// <summary>
    /// Applies the rule to every handler (after their own rules, which must not match <see cref="IsDatabaseAway"/>).
    /// </summary>
    /// <param name="maxAttemptsWhileUp">Failures of one message while the database answers before it goes to the dead-letter store.</param>
    public static void WaitForTheDatabase(this WolverineOptions options, int maxAttemptsWhileUp = MaxAttemptsWhileUp)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxAttemptsWhileUp, 1);
        options.Policies.OnException(IsDatabaseAway).CustomActionIndefinitely(async (runtime, lifecycle, exception) =>
        {
            var envelope = lifecycle.Envelope;
            var answers = envelope is not null && await AnswersAsync(runtime);
            if (envelope is not null && answers && EnvelopeCounters.Increment(envelope, FailuresWhileUpHeader) >= maxAttemptsWhileUp)
            {
                // The module that knows what the message was about says so in its own entry (IDeadLetterReport), instead of this one.
                if (ReportedDeadLetters.ReportFor(runtime.Services, envelope) is { } report)
                {
                    report.DeadLettered(envelope, exception);
                }
                else
                {
                    runtime.LoggerFactory.CreateLogger(typeof(DatabaseOutages)).LogError(
                        exception, "{MessageType} {EnvelopeId} of tenant {TenantId} failed {Failures} times while the database answered; moved to the dead-letter store",
                        envelope.MessageType, envelope.Id, envelope.TenantId ?? StorageConstants.DefaultTenantId, maxAttemptsWhileUp);
                }

                // Stored with the message: a replay starts counting afresh.
                envelope.Headers.Remove(FailuresWhileUpHeader);
                envelope.Headers.Remove(WaitsForTheDatabaseHeader);
                // What Wolverine's own "move to the error queue" does: store it there, settle it with its receiver (a batch's
                // pending count included), and count and log it as dead-lettered (its wolverine-dead-letter-queue metric).
                await lifecycle.MoveToDeadLetterQueueAsync(exception);
                SettledInTheInbox(envelope);
                await lifecycle.CompleteAsync();
                runtime.MessageTracking.MessageFailed(envelope, exception);
                runtime.MessageTracking.MovedToErrorQueue(envelope, exception);
                return;
            }

            try
            {
                await Task.Delay(PauseAfter(envelope?.Attempts ?? 1), runtime.Cancellation);
            }
            catch (OperationCanceledException)
            {
                return; // the node stops: the message stays in the inbox, for the next node that starts
            }

            if (envelope is not null && !answers)
            {
                // Wolverine logs the deferral below ("was rescheduled to queue", with the envelope) at each attempt: while an
                // outage is on, the outage log holds it (it says the outage once), as it holds the other entries about it.
                envelope.Headers[WaitsForTheDatabaseHeader] = envelope.Attempts.ToString(CultureInfo.InvariantCulture);
            }

            await lifecycle.DeferAsync();
        }, "wait for the database, then try again");
    }

    /// <summary>
    /// Marks a dead-lettered envelope as already settled in the inbox: the move to the dead-letter store took its row out.
    /// Without it, completing it with a durable receiver wrote "handled" for its id afterwards, in the background: replayed
    /// meanwhile (its row back in the inbox, same id and queue), the message was marked handled before any node claimed it
    /// and never ran, silently. A batch's messages are Wolverine's own (not reachable here): they keep that late mark.
    /// </summary>
    private static void SettledInTheInbox(Envelope envelope) => envelope.Status = EnvelopeStatus.Handled;

    /// <summary>Whether the database answers <c>select 1</c> within <see cref="ProbeTimeout"/> (never throws).</summary>
    private static async Task<bool> AnswersAsync(IWolverineRuntime runtime)
        => await FailureAsync(runtime.Services.GetRequiredService<IDocumentStore>(), runtime.Cancellation) is null;

    /// <summary>
    /// Null when the database answers <c>select 1</c> within <see cref="ProbeTimeout"/>, else why not (never throws). Callers
    /// that ask at once share one question, and none waits past the limit, even while Npgsql waits on a server that does not
    /// answer (<see cref="DatabaseProbe"/>).
    /// </summary>
    public static Task<Exception?> FailureAsync(IDocumentStore store, CancellationToken cancellationToken)
        => DatabaseProbe.For(store).FailureAsync(ProbeTimeout, cancellationToken);

    /// <summary>
    /// Whether <paramref name="envelope"/> is put back, after its current attempt, to wait for a database that did not
    /// answer <c>select 1</c> (not for one that answered: a timeout, a deadlock).
    /// </summary>
    public static bool WaitsForTheDatabase(Envelope envelope)
        => envelope.Headers.TryGetValue(WaitsForTheDatabaseHeader, out var attempt) && attempt == envelope.Attempts.ToString(CultureInfo.InvariantCulture);
}
