using Npgsql;

namespace ModularChat.Summaries.Tests;

/// <summary>PostgreSQL refusing chosen writes, as a lost race or a failing commit would: a trigger on the real table.</summary>
internal static class RefusedWrites
{
    /// <summary>
    /// Makes PostgreSQL refuse the first inserts or updates of the rows of <paramref name="table"/> that match <paramref name="when"/>,
    /// one for each of <paramref name="raises"/>, the n-th with the n-th of them (a trigger, dropped when disposed). A sequence
    /// counts the writes: the refused transaction takes back what it wrote, but not a sequence's step.
    /// </summary>
    public static async Task<IAsyncDisposable> RefuseFirstWritesAsync(this ModularChatApp app, string table, string when, params string[] raises)
    {
        var name = $"refuse_first_{Guid.NewGuid():N}";
        var refusals = string.Concat(raises.Select((raise, i) => $"when {i + 1} then {raise}; "));
        await SqlAsync(app, $"create sequence modularchat.{name}");
        await SqlAsync(app, $"create function modularchat.{name}() returns trigger language plpgsql as $$ begin case nextval('modularchat.{name}') {refusals}else null; end case; return new; end $$");
        await SqlAsync(app, $"create trigger {name} before insert or update on {table} for each row when ({when}) execute function modularchat.{name}()");
        return new Dropped(() => SqlAsync(app, $"drop trigger {name} on {table}; drop function modularchat.{name}(); drop sequence modularchat.{name}"));
    }

    private static async Task SqlAsync(ModularChatApp app, string sql)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    private sealed class Dropped(Func<Task> drop) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await drop();
    }
}
