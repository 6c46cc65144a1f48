using Npgsql;
using Testcontainers.PostgreSql;
using Testcontainers.Redis;

namespace ModularChat.Testing;

/// <summary>
/// Real PostgreSQL and Redis for tests. The connection strings come from the environment
/// (ConnectionStrings__Postgres / ConnectionStrings__Redis, set by ./build.sh test); without
/// them, Testcontainers starts both in Docker. Each test assembly gets its own database so
/// test projects can run in parallel.
/// </summary>
public static class TestInfrastructure
{
    private static readonly SemaphoreSlim Gate = new(1, 1);
    private static PostgreSqlContainer? _postgres;
    private static RedisContainer? _redis;

    /// <summary>A connection string to a database of its own for <paramref name="databaseName"/>, created if needed.</summary>
    public static async Task<string> PostgresAsync(string databaseName)
    {
        var server = Environment.GetEnvironmentVariable("ConnectionStrings__Postgres");
        if (string.IsNullOrWhiteSpace(server))
        {
            server = await StartContainerAsync(
                () => _postgres ??= new PostgreSqlBuilder("postgres:15-alpine").Build(),
                c => c.StartAsync(),
                c => c.GetConnectionString());
        }

        var admin = new NpgsqlConnectionStringBuilder(server) { Database = "postgres", Pooling = false };
        await using (var connection = new NpgsqlConnection(admin.ConnectionString))
        {
            await connection.OpenAsync();
            await using var exists = new NpgsqlCommand("select 1 from pg_database where datname = @name", connection);
            exists.Parameters.AddWithValue("name", databaseName);
            if (await exists.ExecuteScalarAsync() is null)
            {
                try
                {
                    await using var create = new NpgsqlCommand($"create database \"{databaseName}\"", connection);
                    await create.ExecuteNonQueryAsync();
                }
                catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.DuplicateDatabase or PostgresErrorCodes.UniqueViolation)
                {
                    // Another test process created it first.
                }
            }
        }

        return new NpgsqlConnectionStringBuilder(server) { Database = databaseName }.ConnectionString;
    }

    /// <summary>
    /// A connection string to an empty database for <paramref name="databaseName"/>: one left by an earlier run is dropped first
    /// (with force, closing what connections it still has), for a test whose figures count everything in its database.
    /// </summary>
    public static async Task<string> EmptyPostgresAsync(string databaseName)
    {
        var database = await PostgresAsync(databaseName);
        var admin = new NpgsqlConnectionStringBuilder(database) { Database = "postgres", Pooling = false };
        await using (var connection = new NpgsqlConnection(admin.ConnectionString))
        {
            await connection.OpenAsync();
            await using var drop = new NpgsqlCommand($"drop database if exists \"{databaseName}\" with (force)", connection);
            await drop.ExecuteNonQueryAsync();
        }

        return await PostgresAsync(databaseName);
    }

    /// <summary>A Redis connection string, or null when neither the environment nor Docker provides one.</summary>
    public static async Task<string> RedisAsync()
    {
        var configured = Environment.GetEnvironmentVariable("ConnectionStrings__Redis");
        if (!string.IsNullOrWhiteSpace(configured))
        {
            return configured;
        }

        return await StartContainerAsync(
            () => _redis ??= new RedisBuilder("redis:7-alpine").Build(),
            c => c.StartAsync(),
            c => c.GetConnectionString());
    }

    private static async Task<string> StartContainerAsync<T>(Func<T> create, Func<T, Task> start, Func<T, string> connectionString)
        where T : DotNet.Testcontainers.Containers.IContainer
    {
        await Gate.WaitAsync();
        try
        {
            var container = create();
            if (container.State != DotNet.Testcontainers.Containers.TestcontainersStates.Running)
            {
                await start(container);
            }

            return connectionString(container);
        }
        finally
        {
            Gate.Release();
        }
    }
}
