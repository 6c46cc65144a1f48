using Marten;
using Npgsql;

namespace ModularChat.BuildingBlocks.Persistence;

/// <summary>Connections to the Marten store's PostgreSQL for SQL of our own (plain tables, bulk statements).</summary>
public static class StoreConnections
{
    /// <summary>An open connection from the store's pool; the caller disposes it (a connection that failed to open is disposed here).</summary>
    public static async Task<NpgsqlConnection> OpenConnectionAsync(this IDocumentStore store, CancellationToken cancellationToken)
    {
        var connection = store.Storage.Database.CreateConnection();
        try
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }
}
