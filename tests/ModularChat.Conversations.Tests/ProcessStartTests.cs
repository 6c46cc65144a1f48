using System.Globalization;
using System.Text.RegularExpressions;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// The Host as its own process, as an operator and a process manager see it: how it ends when its start is refused, and
/// what its console lines look like.
/// </summary>
[Collection(ProcessesCollection.Name)]
public sealed partial class ProcessStartTests(ConversationsProcessesApp app)
{
    [Theory]
    [InlineData("Conversations__MaxTitleLength", "0", "Configuration 'Conversations:MaxTitleLength'")] // a validated option
    [InlineData("Limits__MaxRequestBodyBytes", "0", "Configuration 'Limits:MaxRequestBodyBytes'")] // read before the host is built
    [InlineData("Cache__MaxEntryBytes", "1", "Configuration 'Cache:MaxEntryBytes'")] // read before the host is built
    [InlineData("Messaging__ProjectionStallWarning", "0", "Configuration 'Messaging:ProjectionStallWarning'")] // read before the host is built
    [InlineData("Search__Language", "klingon", "Configuration 'Search:Language'")] // a start check against the database
    public async Task A_refused_setting_ends_the_process_with_exit_code_1_and_its_message_once_in_a_timestamped_entry(string variable, string value, string message)
    {
        // Before, the refusal escaped the entry point: logged once, printed again by the runtime with its stack trace, and
        // the process aborted (SIGABRT, exit code 134). Later, a setting read before the host was built was a bare line on
        // stderr, without the UTC timestamp every other entry has.
        var (exit, output) = await app.RunHostCommandAsync(new Dictionary<string, string>
        {
            [variable] = value,
            // A node of its own cluster: on the processes' database, should it start (see StartHostProcessAsync).
            ["ConnectionStrings__Postgres"] = await app.ProcessDatabaseAsync(),
            ["ASPNETCORE_URLS"] = "http://127.0.0.1:0",
        });

        Assert.True(exit == 1, $"exit code {exit}:\n{output}");
        Assert.True(Occurrences(output, message) == 1, $"'{message}' is not in the output exactly once:\n{output}");
        Assert.DoesNotContain("Unhandled exception", output, StringComparison.Ordinal);
        Assert.DoesNotMatch(StackFrame(), output);
        var entries = output.Split('\n').Where(line => line.Length > 0 && !char.IsWhiteSpace(line[0])).ToList();
        Assert.NotEmpty(entries);
        Assert.All(entries, line => Assert.Matches(TimestampedEntry(), line));
        Assert.Contains(entries, line => line.Contains(" crit: ", StringComparison.Ordinal));
    }

    [Fact]
    public async Task An_unreachable_database_ends_the_process_with_exit_code_1_and_one_line_naming_where_it_is_and_no_password()
    {
        const string password = "Pg-Never-Printed-7";
        var (exit, output) = await app.RunHostCommandAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = $"Host=127.0.0.1;Port=1;Database=modularchat;Username=modularchat;Password={password}",
            ["ASPNETCORE_URLS"] = "http://127.0.0.1:0",
        });

        Assert.True(exit == 1, $"exit code {exit}:\n{output}");
        Assert.True(Occurrences(output, "PostgreSQL at 127.0.0.1:1 could not be reached: ") == 1, output);
        Assert.DoesNotContain(password, output, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", output, StringComparison.Ordinal);
        Assert.DoesNotMatch(StackFrame(), output);
    }

    [Theory]
    [InlineData("retention")]
    [InlineData("summaries")]
    [InlineData("rotate-keys")]
    [InlineData("db-apply")]
    [InlineData("projections")]
    [InlineData("resources")]
    [InlineData("storage", "counts")]
    [InlineData("event-query")]
    public async Task A_command_on_the_services_data_refused_at_its_start_says_why_once_without_a_stack_trace(string command, params string[] arguments)
    {
        // Before, retention and summaries failed in their host's start, which reported the refusal with its stack trace,
        // and JasperFx printed it again (~100 lines); rotate-keys failed on its first query with Npgsql's stack trace, and
        // the database commands of JasperFx, Marten and Wolverine with JasperFx's "ERROR:" and the stack trace.
        const string password = "Pg-Never-Printed-9";
        var (exit, output) = await app.RunHostCommandAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = $"Host=127.0.0.1;Port=1;Database=modularchat;Username=modularchat;Password={password}",
        }, [command, .. arguments]);

        Assert.True(exit == 1, $"exit code {exit}:\n{output}");
        Assert.True(Occurrences(output, $"The command '{command}' is refused: PostgreSQL at 127.0.0.1:1 could not be reached: ") == 1, output);
        Assert.DoesNotContain("ERROR:", output, StringComparison.Ordinal);
        Assert.DoesNotContain(password, output, StringComparison.Ordinal);
        Assert.DoesNotMatch(StackFrame(), output);
    }

    [Theory]
    [InlineData("projections", "list")]
    [InlineData("resources", "list")]
    [InlineData("db-list")]
    public async Task A_command_that_reads_the_configuration_alone_runs_without_the_database(string command, params string[] arguments)
    {
        var (exit, output) = await app.RunHostCommandAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = "Host=127.0.0.1;Port=1;Database=modularchat;Username=modularchat",
        }, [command, .. arguments]);

        Assert.True(exit == 0, $"exit code {exit}:\n{output}");
        Assert.DoesNotContain("could not be reached", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_command_that_fails_says_the_command_failed_not_that_the_node_could_not_start()
    {
        // `resources clear` first asks the database which nodes run (CommandGuard): here the node list is a table it cannot read.
        const string password = "Pg-Never-Printed-8";
        var database = new NpgsqlConnectionStringBuilder(await app.EmptyDatabaseOfItsOwnAsync("unreadable_nodes")) { Password = password };
        await using (var connection = new NpgsqlConnection(database.ConnectionString))
        {
            await connection.OpenAsync();
            await using var create = new NpgsqlCommand("create schema modularchat; create table modularchat.mc_nodes (unexpected int)", connection);
            await create.ExecuteNonQueryAsync();
        }

        var (exit, output) = await app.RunHostCommandAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__Postgres"] = database.ConnectionString,
        }, "resources", "clear");

        Assert.True(exit == 1, $"exit code {exit}:\n{output}");
        Assert.True(Occurrences(output, "The command 'resources' failed") == 1, output);
        Assert.DoesNotContain("The node could not start", output, StringComparison.Ordinal);
        Assert.DoesNotContain(password, output, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_node_whose_search_language_the_database_lacks_is_refused_before_it_registers_itself()
    {
        var database = await app.ProcessDatabaseAsync();
        var before = await NodeIdsAsync(database);

        var (exit, output) = await app.RunHostCommandAsync(new Dictionary<string, string>
        {
            ["Search__Language"] = "klingon",
            ["ConnectionStrings__Postgres"] = database,
            ["ASPNETCORE_URLS"] = "http://127.0.0.1:0",
        });

        Assert.True(exit == 1, $"exit code {exit}:\n{output}");
        Assert.Contains("Configuration 'Search:Language': 'klingon' is not a PostgreSQL text-search configuration", output, StringComparison.Ordinal);
        // Before, the check ran among the hosted services, after Wolverine's and the node list's: the refused node stayed
        // in both for a minute (and the running nodes warned about its settings).
        Assert.Empty((await NodeIdsAsync(database)).Except(before));
    }

    [Fact]
    public async Task Console_log_entries_start_with_a_UTC_timestamp()
    {
        await using var node = await app.StartHostProcessAsync();

        var output = await Eventually.Until(() => Task.FromResult(node.Output), o => o.Contains("Content root path:", StringComparison.Ordinal), what: "No content root logged");

        // An entry's first line; the lines of its message are indented under it.
        var entries = output.Split('\n').Where(line => line.Length > 0 && !char.IsWhiteSpace(line[0])).ToList();
        Assert.NotEmpty(entries);
        Assert.All(entries, line => Assert.Matches(TimestampedEntry(), line));
        var first = DateTimeOffset.ParseExact(TimestampedEntry().Match(entries[0]).Groups["at"].Value, "yyyy-MM-dd'T'HH:mm:ss.fff'Z'",
            CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
        Assert.InRange(first, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddMinutes(1)); // UTC, not the machine's zone
    }

    [Theory]
    [InlineData("Limits__MaxRequestBodyBytes")] // refused before the host is built: logged through a console logger of its own
    [InlineData("Conversations__MaxTitleLength")] // refused by the host's options: logged through the host's logging
    public async Task The_json_console_formatter_writes_timestamps_without_the_simple_formatters_trailing_space(string variable)
    {
        var (exit, output) = await app.RunHostCommandAsync(new Dictionary<string, string>
        {
            [variable] = "0",
            ["Logging__Console__FormatterName"] = "json",
            ["ConnectionStrings__Postgres"] = await app.ProcessDatabaseAsync(),
            ["ASPNETCORE_URLS"] = "http://127.0.0.1:0",
        });

        Assert.True(exit == 1, $"exit code {exit}:\n{output}");
        var entries = output.Split('\n').Select(line => line.Trim()).Where(line => line.StartsWith('{')).ToList();
        Assert.NotEmpty(entries);
        // The shared format ends in the space the simple formatter writes before the level: it ended every JSON timestamp.
        Assert.All(entries, line => Assert.Matches(
            @"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", System.Text.Json.JsonDocument.Parse(line).RootElement.GetProperty("Timestamp").GetString()));
    }

    /// <summary>The nodes recorded in <paramref name="database"/>: the service's node list and Wolverine's own.</summary>
    private static async Task<HashSet<string>> NodeIdsAsync(string database)
    {
        await using var connection = new Npgsql.NpgsqlConnection(database);
        await connection.OpenAsync();
        var ids = new HashSet<string>();
        foreach (var table in new[] { "modularchat.mc_nodes", "modularchat.wolverine_nodes" })
        {
            await using var exists = new Npgsql.NpgsqlCommand($"select to_regclass('{table}') is not null", connection);
            if (!(bool)(await exists.ExecuteScalarAsync())!)
            {
                continue; // no node ever started on this database
            }

            await using var read = new Npgsql.NpgsqlCommand($"select id::text from {table}", connection);
            await using var reader = await read.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                ids.Add($"{table}:{reader.GetString(0)}");
            }
        }

        return ids;
    }

    private static int Occurrences(string text, string value)
        => Regex.Count(text, Regex.Escape(value));

    [GeneratedRegex(@"^\s+at \S+\(", RegexOptions.Multiline)]
    private static partial Regex StackFrame();

    [GeneratedRegex(@"^(?<at>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z) (trce|dbug|info|warn|fail|crit): ")]
    private static partial Regex TimestampedEntry();
}
