using Alba;
using Microsoft.Extensions.Logging;
using Npgsql;
using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>The background workers (embedding, tombstone clean-up) of a node whose database goes away, and comes back.</summary>
[Collection(AppCollection.Name)]
public sealed class WorkerOutageTests(SearchApp app)
{
    [Fact]
    public async Task While_the_database_is_away_the_embedding_worker_draws_its_rounds_apart_and_logs_little_then_says_it_works_again()
    {
        await using var proxy = PostgresProxy();
        await using var node = await StartNodeAsync(proxy);
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

    [Fact]
    public async Task A_node_embedding_when_the_database_goes_away_logs_the_outage_once_though_its_rounds_and_giving_back_its_claim_both_meet_it()
    {
        // Seen once under load: "dropped mid-read" (a round) and then "refused" (giving the claimed rows back), two warnings
        // with their stack traces for one outage. Here the test node has claimed a tenant's entry and waits for the model
        // when the database goes away; the model answers after it went.
        var user = ModularChatApp.NewUser();
        var marker = "m" + Guid.NewGuid().ToString("N")[..12];
        var answer = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        app.OpenAi.BeforeEmbedding = async r =>
        {
            if (r.Body["input"]?.ToJsonString().Contains(marker, StringComparison.Ordinal) == true)
            {
                await answer.Task;
            }
        };
        await app.Providers.UseAsync(user, "fake-embed-3");
        try
        {
            // The main node embeds the tenant's first entry, held by the model: it claims none of the tenant's others meanwhile,
            // so the test node is the one that claims the second.
            using var client = app.Client(user);
            await client.StartConversation("first", Message($"The lighthouse keeper wrote in his diary. first {marker}"));
            await Eventually.Until(() => Task.FromResult(EmbeddingRequestsAbout($"first {marker}")), n => n >= 1, what: "the main node embedding the first entry");
            await using var proxy = PostgresProxy();
            await using var node = await StartNodeAsync(proxy);
            await client.StartConversation("second", Message($"The ferry left at dawn. second {marker}"));
            await Eventually.Until(() => Task.FromResult(EmbeddingRequestsAbout($"second {marker}")), n => n >= 1, what: "the test node embedding the second entry");
            var before = app.Logs.Entries.Count();

            proxy.Cut();
            answer.SetResult(); // the test node cannot store the vector, nor give its claim back
            await Task.Delay(TimeSpan.FromSeconds(4));
            proxy.Restore();

            await Eventually.Until(() => Task.FromResult(WorkerEntries(before).Any(e => e.Message.Contains("works again", StringComparison.Ordinal))), found => found,
                seconds: 60, what: "The worker did not say it works again");
            var warnings = WorkerEntries(before).Where(e => e.Level == LogLevel.Warning && e.Message.StartsWith("The search embedding worker", StringComparison.Ordinal)).ToList();
            Assert.Single(warnings, e => e.Exception is not null);
        }
        finally
        {
            answer.TrySetResult();
            app.OpenAi.BeforeEmbedding = _ => Task.CompletedTask;
            await app.Providers.UseAsync(user, null);
        }
    }

    [Fact]
    public async Task While_the_database_is_away_the_tombstone_clean_up_logs_one_warning_not_one_a_round_then_says_it_works_again()
    {
        await using var proxy = PostgresProxy();
        // Tombstones live 1 s on this node: a clean-up round every 0.5 s.
        await using var node = await StartNodeAsync(proxy, new Dictionary<string, string?>
        {
            ["Search:TombstoneLifetime"] = "00:00:01",
            ["Search:VectorIndex:IdleEviction"] = "00:00:01",
        });
        var before = app.Logs.Entries.Count();

        // 6 s away: a warning with its stack trace every round was 12 of them.
        proxy.Cut();
        await Task.Delay(TimeSpan.FromSeconds(6));
        proxy.Restore();
        Assert.Single(CleanupWarnings(before), e => e.Exception is not null); // the first, with its exception; the next ones say how many rounds failed

        await Eventually.Until(() => Task.FromResult(CleanupEntries(before).Any(e => e.Message.Contains("works again", StringComparison.Ordinal))), found => found,
            seconds: 60, what: "The tombstone clean-up did not say it works again");
        var warnings = CleanupWarnings(before).ToList();
        Assert.Single(warnings, e => e.Exception is not null);
        Assert.InRange(warnings.Count, 1, 4);
    }

    /// <summary>A relay in front of the test's PostgreSQL, for a node the test can take it away from.</summary>
    private TcpProxy PostgresProxy()
    {
        var database = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString);
        return new TcpProxy(database.Host!, database.Port);
    }

    /// <summary>A node reaching PostgreSQL through <paramref name="proxy"/>, with <paramref name="settings"/> on top of the app's.</summary>
    private Task<IAlbaHost> StartNodeAsync(TcpProxy proxy, IDictionary<string, string?>? settings = null)
    {
        var throughProxy = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString) { Host = "127.0.0.1", Port = proxy.Port };
        return app.StartHostAsync(new Dictionary<string, string?>(settings ?? new Dictionary<string, string?>())
        {
            ["ConnectionStrings:Postgres"] = throughProxy.ConnectionString,
        });
    }

    private int EmbeddingRequestsAbout(string text)
        => app.OpenAi.Requests.Count(r => r.Path == "/v1/embeddings" && r.Body["input"]?.ToJsonString().Contains(text, StringComparison.Ordinal) == true);

    private IEnumerable<LogEntry> WorkerEntries(int after) => EntriesOf(".EmbeddingWorker", after);

    private IEnumerable<LogEntry> CleanupEntries(int after) => EntriesOf(".TombstoneCleanup", after);

    private IEnumerable<LogEntry> CleanupWarnings(int after) => CleanupEntries(after).Where(e => e.Level == LogLevel.Warning);

    private IEnumerable<LogEntry> EntriesOf(string type, int after)
        => app.Logs.Entries.Skip(after).Where(e => e.Category.EndsWith(type, StringComparison.Ordinal));
}
