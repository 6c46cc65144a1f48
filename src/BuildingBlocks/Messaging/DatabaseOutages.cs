using Npgsql;
using Wolverine;
using Wolverine.ErrorHandling;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>
/// A database that is away for a while (a restart, a failover, the network) fails whatever a message handler does, through
/// no fault of the message. Wolverine's default (three attempts at once, then the dead-letter store) dropped such messages
/// within a second of an outage: an append's notice to Summaries among them, so the conversation's activity missed those
/// messages and its summary came late or never. Every handler waits for the database instead and tries again, as long as
/// it takes (with a growing pause, at most <see cref="MaxPause"/>); handlers' own failure rules leave these failures to this
/// one (<see cref="IsDatabaseAway"/>). Except summary jobs: each attempt may call the model again, so they keep their
/// bounded retries, then the dead-letter store.
/// </summary>
public static class DatabaseOutages
{
    /// <summary>The longest pause between two attempts while the database stays away.</summary>
    public static readonly TimeSpan MaxPause = TimeSpan.FromSeconds(30);

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

    /// <summary>Applies the rule to every handler (after their own rules, which must not match <see cref="IsDatabaseAway"/>).</summary>
    public static void WaitForTheDatabase(this WolverineOptions options)
        => options.Policies.OnException(IsDatabaseAway).CustomActionIndefinitely(async (runtime, lifecycle, _) =>
        {
            try
            {
                await Task.Delay(PauseAfter(lifecycle.Envelope?.Attempts ?? 1), runtime.Cancellation);
            }
            catch (OperationCanceledException)
            {
                return; // the node stops: the message stays in the inbox, for the next node that starts
            }

            await lifecycle.DeferAsync();
        }, "wait for the database, then try again");
}
