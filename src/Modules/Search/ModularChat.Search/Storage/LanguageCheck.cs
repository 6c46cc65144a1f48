using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Options;
using Npgsql;

namespace ModularChat.Search.Storage;

/// <summary>
/// Stops the start when <see cref="SearchOptions.Language"/> is not a text-search configuration of the database:
/// otherwise every projected message would fail and search indexing would stall. A check made before the node starts
/// anything (<see cref="IStartCheck"/>): a hosted service of its own ran after the node had registered itself in the node
/// list, where the refused node stayed for a minute and the running nodes warned about its settings.
/// </summary>
internal sealed class LanguageCheck(SearchDatabase database, IOptions<SearchOptions> options) : IStartCheck
{
    public async Task CheckAsync(CancellationToken cancellationToken)
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
            throw new StartRefusedException(
                $"Configuration 'Search:Language': '{language}' is not a PostgreSQL text-search configuration. Available: {reader.GetString(1)}.");
        }
    }
}
