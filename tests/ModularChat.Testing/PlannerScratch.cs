using Npgsql;

namespace ModularChat.Testing;

/// <summary>
/// Empty copies of the service's tables (same columns and indexes) in a schema of their own, dropped at the end: a test
/// fills them so that PostgreSQL's statistics are exactly the ones it means (say, tenants analyzed before a newcomer's
/// first row) and reads the plans of the service's statements against them.
/// </summary>
public sealed class ScratchTables : IAsyncDisposable
{
    private readonly NpgsqlConnection _connection;

    private ScratchTables(NpgsqlConnection connection, string schema) => (_connection, Schema) = (connection, schema);

    /// <summary>The copies' schema.</summary>
    public string Schema { get; }

    /// <summary>Copies <paramref name="tables"/> of the <c>modularchat</c> schema, empty.</summary>
    public static async Task<ScratchTables> CreateAsync(NpgsqlConnection connection, params string[] tables)
    {
        var schema = $"scratch_{Guid.NewGuid():N}";
        await connection.ExecuteAsync($"create schema {schema}; "
            + string.Concat(tables.Select(t => $"create table {schema}.{t} (like modularchat.{t} including all);")));
        return new ScratchTables(connection, schema);
    }

    public async ValueTask DisposeAsync() => await _connection.ExecuteAsync($"drop schema {Schema} cascade");
}

/// <summary>Statements and plans, for tests that check what PostgreSQL does with the service's SQL.</summary>
public static class PlanReading
{
    public static async Task ExecuteAsync(this NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>The plan (without costs) of one execution of <paramref name="sql"/> with these values, as its first executions are planned.</summary>
    public static Task<List<string>> ExplainAsync(this NpgsqlConnection connection, string sql, params object[] values)
        => connection.ExplainAsync(sql, values.Select(v => new NpgsqlParameter { Value = v }));

    /// <summary>The plan (without costs) of one execution of <paramref name="sql"/> with copies of these parameters.</summary>
    public static async Task<List<string>> ExplainAsync(this NpgsqlConnection connection, string sql, IEnumerable<NpgsqlParameter> parameters)
    {
        await using var command = new NpgsqlCommand($"explain (costs off) {sql}", connection);
        foreach (var parameter in parameters)
        {
            command.Parameters.Add(parameter.Clone());
        }

        return await command.ReadStringsAsync();
    }

    /// <summary>The first column of every row, as text (the lines of an EXPLAIN, for one).</summary>
    public static async Task<List<string>> ReadStringsAsync(this NpgsqlCommand command)
    {
        var lines = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            lines.Add(reader.GetString(0));
        }

        return lines;
    }
}
