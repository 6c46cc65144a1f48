using System.Runtime.CompilerServices;
using Marten;
using ModularChat.BuildingBlocks.Persistence;
using Npgsql;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>
/// Asks a store's database <c>select 1</c> and tells within a time limit whether it answered, whatever Npgsql does
/// meanwhile. The callers that ask while a question is on its way share it (a burst of failing handlers asks once).
/// </summary>
/// <remarks>
/// Npgsql does not give up on a statement by itself when it is cancelled or times out: it first sends PostgreSQL a cancel
/// request over a new connection and waits for the server to close that connection. A server that accepts connections
/// but does not answer (a stalled server, a proxy in front of one) closes it only after its <c>authentication_timeout</c>
/// (60 s by default), and the statement waited that long: the probe that was to tell an outage in 5 s took a minute. So the
/// caller waits for the answer only up to the limit; the question itself runs on under its own command timeout and ends
/// when Npgsql is done with it, on no caller's time. A question older than the limit is not waited for again: the next
/// caller asks anew (on another connection), so a database that answers again is seen at once.
/// </remarks>
internal sealed class DatabaseProbe(IDocumentStore store, TimeProvider clock)
{
    private static readonly ConditionalWeakTable<IDocumentStore, DatabaseProbe> Probes = [];

    private readonly Lock _gate = new();
    private Task<bool>? _question;
    private long _askedAt;

    /// <summary>The probe of <paramref name="store"/>, shared by everyone who asks about it.</summary>
    public static DatabaseProbe For(IDocumentStore store) => Probes.GetValue(store, static s => new DatabaseProbe(s, TimeProvider.System));

    /// <summary>Whether the database answers <c>select 1</c> within <paramref name="limit"/> (false when the caller gives up first; never throws).</summary>
    public async Task<bool> AnswersAsync(TimeSpan limit, CancellationToken cancellationToken)
    {
        Task<bool> question;
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
        catch (Exception e) when (e is TimeoutException or OperationCanceledException)
        {
            return false;
        }
    }

    private async Task<bool> AskAsync(TimeSpan limit)
    {
        try
        {
            // No cancellation token: cancelling would only start the wait described above, on this question's time.
            await using var connection = await store.OpenConnectionAsync(CancellationToken.None).ConfigureAwait(false);
            await using var command = new NpgsqlCommand("select 1", connection) { CommandTimeout = (int)Math.Ceiling(limit.TotalSeconds) };
            await command.ExecuteScalarAsync().ConfigureAwait(false);
            return true;
        }
        catch (Exception)
        {
            // Whatever failed (a refused or broken connection, a timeout, a pool with no connection left, a store disposed as
            // the node stops), no answer came: and nobody may be left to observe an exception of a question given up on.
            return false;
        }
    }
}
