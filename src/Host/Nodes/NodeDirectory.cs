using System.Text.Json;
using Marten;
using ModularChat.BuildingBlocks.Persistence;
using Npgsql;
using NpgsqlTypes;
using Weasel.Core;
using Weasel.Postgresql;
using Weasel.Postgresql.Tables;

namespace ModularChat.Host.Nodes;

/// <summary>One node of the deployment as it last described itself.</summary>
/// <param name="Id">Wolverine's id of the node (<c>WolverineOptions.UniqueNodeId</c>, the id of its row in <c>wolverine_nodes</c>).</param>
/// <param name="WolverineNodeNumber">The number Wolverine gave the node (what its own logs and envelope ownership name).</param>
/// <param name="Settings">Compared section to its hash (<see cref="SettingsFingerprint"/>): never a value.</param>
/// <param name="Agents">The Wolverine agents (projections, durability) the node ran when it last described itself.</param>
internal sealed record NodeRecord(
    Guid Id, int WolverineNodeNumber, string Machine, int ProcessId, string Version, DateTimeOffset StartedAt, DateTimeOffset LastSeenAt,
    IReadOnlyDictionary<string, string> Settings, IReadOnlyList<string> Agents);

/// <summary>
/// The <c>mc_nodes</c> table: one row per running node, written by the node itself (<see cref="NodeHeartbeat"/>) and read
/// by every node. A plain table rather than a Marten document: it is the deployment's, not a tenant's (every document is
/// conjoined-tenanted here), and a row's liveness is judged by the database's clock, so nodes whose clocks disagree do not
/// take each other for dead.
/// </summary>
internal sealed class NodeDirectory(IDocumentStore store)
{
    private const string TableName = "mc_nodes";

    private readonly string _table = $"{store.Options.DatabaseSchemaName}.{TableName}";

    /// <summary>The table, created and migrated with the rest of the schema when a node starts.</summary>
    public static ISchemaObject Table(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, TableName, SchemaUtils.IdentifierUsage.General));
        table.AddColumn("id", "uuid").NotNull().AsPrimaryKey();
        table.AddColumn("wolverine_node_number", "integer").NotNull();
        table.AddColumn("machine", "varchar").NotNull();
        table.AddColumn("process_id", "integer").NotNull();
        table.AddColumn("version", "varchar").NotNull();
        table.AddColumn("started_at", "timestamp with time zone").NotNull();
        table.AddColumn("last_seen", "timestamp with time zone").NotNull().DefaultValueByExpression("now()");
        table.AddColumn("settings", "jsonb").NotNull();
        table.AddColumn("agents", "text[]").NotNull();
        return table;
    }

    /// <summary>
    /// Writes (or rewrites, after another node cleaned it away) this node's row as seen now, removes the rows of nodes silent
    /// for longer than <paramref name="staleAfter"/>, and returns the live ones, this node's included.
    /// </summary>
    public async Task<IReadOnlyList<NodeRecord>> RefreshAsync(NodeRecord self, TimeSpan staleAfter, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var batch = new NpgsqlBatch(connection)
        {
            BatchCommands =
            {
                new NpgsqlBatchCommand($"""
                    insert into {_table} (id, wolverine_node_number, machine, process_id, version, started_at, last_seen, settings, agents)
                    values ($1, $2, $3, $4, $5, $6, now(), $7, $8)
                    on conflict (id) do update set wolverine_node_number = excluded.wolverine_node_number, machine = excluded.machine,
                        process_id = excluded.process_id, version = excluded.version, started_at = excluded.started_at,
                        last_seen = excluded.last_seen, settings = excluded.settings, agents = excluded.agents
                    """)
                {
                    Parameters =
                    {
                        new() { Value = self.Id },
                        new() { Value = self.WolverineNodeNumber },
                        new() { Value = self.Machine },
                        new() { Value = self.ProcessId },
                        new() { Value = self.Version },
                        new() { Value = self.StartedAt, NpgsqlDbType = NpgsqlDbType.TimestampTz },
                        new() { Value = JsonSerializer.Serialize(self.Settings), NpgsqlDbType = NpgsqlDbType.Jsonb },
                        new() { Value = self.Agents.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text },
                    },
                },
                new NpgsqlBatchCommand($"delete from {_table} where last_seen < now() - $1") { Parameters = { new() { Value = staleAfter } } },
                LiveCommand(staleAfter),
            },
        };
        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        return await ReadAsync(reader, cancellationToken);
    }

    /// <summary>The nodes that described themselves within <paramref name="staleAfter"/>, oldest first.</summary>
    public async Task<IReadOnlyList<NodeRecord>> LoadLiveAsync(TimeSpan staleAfter, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var batch = new NpgsqlBatch(connection) { BatchCommands = { LiveCommand(staleAfter) } };
        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        return await ReadAsync(reader, cancellationToken);
    }

    /// <summary>Removes a node's row (a node stopping: the others see it gone at once rather than after the stale timeout).</summary>
    public async Task RemoveAsync(Guid id, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand($"delete from {_table} where id = $1", connection) { Parameters = { new() { Value = id } } };
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private NpgsqlBatchCommand LiveCommand(TimeSpan staleAfter) => new($"""
        select id, wolverine_node_number, machine, process_id, version, started_at, last_seen, settings, agents
        from {_table} where last_seen >= now() - $1 order by started_at, id
        """)
    {
        Parameters = { new() { Value = staleAfter } },
    };

    private static async Task<IReadOnlyList<NodeRecord>> ReadAsync(NpgsqlDataReader reader, CancellationToken cancellationToken)
    {
        var nodes = new List<NodeRecord>();
        while (await reader.ReadAsync(cancellationToken))
        {
            nodes.Add(new NodeRecord(
                reader.GetGuid(0), reader.GetInt32(1), reader.GetString(2), reader.GetInt32(3), reader.GetString(4),
                reader.GetFieldValue<DateTimeOffset>(5), reader.GetFieldValue<DateTimeOffset>(6),
                JsonSerializer.Deserialize<Dictionary<string, string>>(reader.GetString(7)) ?? [],
                reader.GetFieldValue<string[]>(8)));
        }

        return nodes;
    }

    private Task<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken) => store.OpenConnectionAsync(cancellationToken);
}
