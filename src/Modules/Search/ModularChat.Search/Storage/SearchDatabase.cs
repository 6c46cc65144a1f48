using Marten;
using ModularChat.BuildingBlocks.Persistence;
using Npgsql;

namespace ModularChat.Search.Storage;

/// <summary>Connections to the Marten store's PostgreSQL for the module's own SQL, and its table names.</summary>
internal sealed class SearchDatabase(IDocumentStore store)
{
    public SearchSchema Schema { get; } = new(store.Options.DatabaseSchemaName);

    /// <summary>The schema of Marten's event tables (<c>mt_events</c>, <c>mt_event_progression</c>).</summary>
    public string EventsSchema { get; } = store.Options.Events.DatabaseSchemaName;

    public Task<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken) => store.OpenConnectionAsync(cancellationToken);
}
