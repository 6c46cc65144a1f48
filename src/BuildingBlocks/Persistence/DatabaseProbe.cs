using System.Runtime.CompilerServices;
using Marten;
using Npgsql;

namespace ModularChat.BuildingBlocks.Persistence;

/// <summary>
/// Asks a database <c>select 1</c> and tells within a time limit whether it answered, whatever Npgsql does meanwhile.
/// The callers that ask while a question is on its way share it (a burst of failing handlers asks once).
/// </summary>
/// <remarks>
/// Npgsql does not give up on a statement by itself when it is cancelled or times out: it first sends PostgreSQL a cancel
/// request over a new connection and waits for the server to close that connection. A server that accepts connections
/// but does not answer (a stalled server, a proxy in front of one) closes it only after its <c>authentication_timeout</c>
/// (60 s by default), and the statement waited that long: the outage probe that was to tell in 5 s, and the readiness
/// check in 3 s, took a minute. So the caller waits for the answer only up to the limit; the question itself runs on under
/// its own command timeout and ends when Npgsql is done with it, on no caller's time. A question older than the caller's
/// limit is not waited for again: the caller asks anew (on another connection), so a database that answers again is seen at once.
/// </remarks>
/// <param name="open">Opens a connection to the database (the caller's pool).</param>
public sealed class DatabaseProbe(Func<CancellationToken, Task<NpgsqlConnection>> open, TimeProvider clock)
{
    private static readonly ConditionalWeakTable<IDocumentStore, DatabaseProbe> Probes = [];

    private readonly Lock _gate = new();
    private Task<Exception?>? _question;
    private long _askedAt;

    /// <summary>The probe of <paramref name="store"/>'s database, on its pool, shared by everyone who asks about it.</summary>
    public static DatabaseProbe For(IDocumentStore store)
        => Probes.GetValue(store, static s => new DatabaseProbe(s.OpenConnectionAsync, TimeProvider.System));

    /// <summary>
    /// Null when the database answered <c>select 1</c> within <paramref name="limit"/>; else why not: what the question
    /// failed with, a <see cref="TimeoutException"/> when no answer came in time, or the caller's cancellation (never throws).
    /// </summary>
    public async Task<Exception?> FailureAsync(TimeSpan limit, CancellationToken cancellationToken)
    {
        Task<Exception?> question;
        TimeSpan left;
        lock (_gate)
        {
            var now = clock.GetTimestamp();
            if (_question is null || _question.IsCompleted || clock.GetElapsedTime(_askedAt, now) >= limit)
            {
                _question = Task.Run(() => AskAsync(limit), CancellationToken.None);
                _askedAt = now;
            }

            question = _question;
            left = limit - clock.GetElapsedTime(_askedAt, now);
        }

        try
        {
            return await question.WaitAsync(left, clock, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return new TimeoutException($"The database did not answer select 1 within {limit.TotalSeconds:0.#} s.");
        }
        catch (OperationCanceledException e)
        {
            return e;
        }
    }

    private async Task<Exception?> AskAsync(TimeSpan limit)
    {
        try
        {
            // No cancellation token: cancelling would only start the wait described above, on this question's time.
            await using var connection = await open(CancellationToken.None).ConfigureAwait(false);
            await using var command = new NpgsqlCommand("select 1", connection) { CommandTimeout = (int)Math.Ceiling(limit.TotalSeconds) };
            await command.ExecuteScalarAsync().ConfigureAwait(false);
            return null;
        }
        catch (Exception e)
        {
            // Whatever failed (a refused or broken connection, a timeout, a pool with no connection left, a store disposed as
            // the node stops), no answer came: it is the answer, and nobody is left to observe an exception of a question
            // its callers gave up on.
            return e;
        }
    }
}
