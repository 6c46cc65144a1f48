using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Npgsql;

namespace ModularChat.Search.Storage;

/// <summary>
/// Stops the start when <see cref="SearchOptions.Language"/> is not a text-search configuration of the database:
/// otherwise every projected message would fail and search indexing would stall.
/// </summary>
internal sealed class LanguageCheck(SearchDatabase database, IOptions<SearchOptions> options) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var language = options.Value.Language;
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            "select exists (select 1 from pg_ts_config where cfgname = $1), (select string_agg(cfgname, ', ' order by cfgname) from pg_ts_config)", connection);
        command.Parameters.Add(new NpgsqlParameter { Value = language });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        if (!reader.GetBoolean(0))
        {
            throw new InvalidOperationException(
                $"Configuration 'Search:Language': '{language}' is not a PostgreSQL text-search configuration. Available: {reader.GetString(1)}.");
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
