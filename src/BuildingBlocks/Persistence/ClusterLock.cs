using Marten;
using Npgsql;

namespace ModularChat.BuildingBlocks.Persistence;

/// <summary>
/// A PostgreSQL session-level advisory lock held on a connection of its own, for work that must run once at a time across
/// every node (a key rotation, a summary sweep) and may outlive any one transaction. Disposing it releases the lock
/// explicitly (the pool does not reset connections, No Reset On Close) and closes the connection.
/// </summary>
public sealed class ClusterLock : IAsyncDisposable
{
    private readonly NpgsqlConnection _connection;
    private readonly long _key;

    private ClusterLock(NpgsqlConnection connection, long key)
    {
        _connection = connection;
        _key = key;
    }

    /// <summary>The lock named <paramref name="key"/>, or null when another session (on any node) holds it.</summary>
    public static async Task<ClusterLock?> TryAcquireAsync(IDocumentStore store, long key, CancellationToken cancellationToken)
    {
        var connection = store.Storage.Database.CreateConnection();
        try
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            await using var command = new NpgsqlCommand("select pg_try_advisory_lock(@key)", connection);
            command.Parameters.AddWithValue("key", key);
            if (await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is true)
            {
                return new ClusterLock(connection, key);
            }
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        await connection.DisposeAsync().ConfigureAwait(false);
        return null;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await using var unlock = new NpgsqlCommand("select pg_advisory_unlock(@key)", _connection);
            unlock.Parameters.AddWithValue("key", _key);
            await unlock.ExecuteScalarAsync(CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            await _connection.DisposeAsync().ConfigureAwait(false); // back to the pool; a broken one is dropped, and its session's lock with it
        }
    }
}
