using Npgsql;

namespace ModularChat.Testing;

/// <summary>Reading what the service stored, straight from the database.</summary>
public static class Sql
{
    /// <summary>The number <paramref name="sql"/> returns with <paramref name="values"/> as <c>$1</c>, <c>$2</c>, ... (0 for no row).</summary>
    public static async Task<long> ScalarAsync(this NpgsqlConnection connection, string sql, params object[] values)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var value in values)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = value });
        }

        return Convert.ToInt64(await command.ExecuteScalarAsync() ?? 0L, System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Whether <paramref name="e"/> or an exception inside it is PostgreSQL's deadlock error.</summary>
    public static bool IsDeadlock(Exception e)
        => Exceptions.Flatten(e).Any(x => x is PostgresException { SqlState: PostgresErrorCodes.DeadlockDetected });
}
