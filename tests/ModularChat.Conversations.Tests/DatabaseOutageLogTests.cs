using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using ModularChat.Host.Infrastructure;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>What <see cref="DatabaseOutageLog"/> takes for PostgreSQL being away (the outage itself: DatabaseOutageTests).</summary>
public sealed class DatabaseOutageLogTests
{
    [Fact]
    public void A_deadlock_or_serialization_failure_is_not_taken_for_an_outage_and_a_refused_connection_is()
    {
        var outages = new DatabaseOutageLog(NullLogger<DatabaseOutageLog>.Instance, TimeProvider.System);

        // Transient for the retry rules (DatabaseOutages.IsDatabaseAway), but PostgreSQL answered: before, each was logged as
        // "PostgreSQL is unreachable" and the entry itself went to Debug.
        Assert.False(outages.Holds(new PostgresException("deadlock detected", "ERROR", "ERROR", PostgresErrorCodes.DeadlockDetected)));
        Assert.False(outages.Holds(new InvalidOperationException("wrapped", new PostgresException(
            "could not serialize access", "ERROR", "ERROR", PostgresErrorCodes.SerializationFailure))));
        Assert.False(outages.Away);

        Assert.True(outages.Holds(new NpgsqlException("Failed to connect to 127.0.0.1:5432", new SocketException((int)SocketError.ConnectionRefused))));
        Assert.True(outages.Away);
    }

    [Fact]
    public void A_timeout_or_a_lock_not_available_does_not_start_an_outage_by_itself_and_a_timeout_is_held_while_one_is_on()
    {
        var outages = new DatabaseOutageLog(NullLogger<DatabaseOutageLog>.Instance, TimeProvider.System);
        var timeout = new NpgsqlException("Exception while reading from stream", new TimeoutException("Timeout during reading attempt"));

        // A statement that waited on a lock past its command timeout, or past lock_timeout: PostgreSQL may answer, so the
        // entry is written as itself and the probe asks (DatabaseOutageTests); before, it started the outage at once.
        Assert.False(outages.Holds(new InvalidOperationException("wrapped", timeout)));
        Assert.False(outages.Holds(new PostgresException("canceling statement due to lock timeout", "ERROR", "ERROR", PostgresErrorCodes.LockNotAvailable)));
        Assert.False(outages.Away);
        Assert.True(outages.Suspected);

        Assert.True(outages.Holds(new NpgsqlException("Failed to connect to 127.0.0.1:5432", new SocketException((int)SocketError.ConnectionRefused))));
        Assert.True(outages.Away);
        Assert.False(outages.Suspected);
        Assert.True(outages.Holds(timeout));
    }
}
