using Microsoft.Extensions.Logging;
using Npgsql;

namespace ModularChat.Search.Tests;

/// <summary>The embedding worker of a node whose database goes away, and comes back.</summary>
[Collection(AppCollection.Name)]
public sealed class WorkerOutageTests(SearchApp app)
{
    [Fact]
    public async Task While_the_database_is_away_the_embedding_worker_draws_its_rounds_apart_and_logs_little_then_says_it_works_again()
    {
        var database = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString);
        await using var proxy = new TcpProxy(database.Host!, database.Port);
        var throughProxy = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString) { Host = "127.0.0.1", Port = proxy.Port };
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["ConnectionStrings:Postgres"] = throughProxy.ConnectionString });
        var before = app.Logs.Entries.Count();

        // 4 s away, with Search:Embeddings:PollInterval at 100 ms here: a round every poll logged ~40 warnings with their
        // stack traces (82 in a 40 s outage at the default 0.5 s).
        proxy.Cut();
        await Task.Delay(TimeSpan.FromSeconds(4));
        proxy.Restore();

        await Eventually.Until(() => Task.FromResult(WorkerEntries(before).Any(e => e.Message.Contains("works again", StringComparison.Ordinal))), found => found,
            seconds: 60, what: "The worker did not say it works again");
        var warnings = WorkerEntries(before).Where(e => e.Level == LogLevel.Warning && e.Message.StartsWith("The search embedding worker", StringComparison.Ordinal)).ToList();
        Assert.InRange(warnings.Count, 1, 6);
        Assert.Single(warnings, e => e.Exception is not null); // the first, with its exception; the next ones say how many rounds failed
    }

    private IEnumerable<LogEntry> WorkerEntries(int after)
        => app.Logs.Entries.Skip(after).Where(e => e.Category.EndsWith(".EmbeddingWorker", StringComparison.Ordinal));
}
