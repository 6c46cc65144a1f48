using System.Net;
using System.Text.RegularExpressions;
using Npgsql;
using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>
/// The node that runs search indexing (Marten's projection daemon, assigned by Wolverine's leader) loses its database for
/// longer than a node may stay silent, and gets it back: indexing resumes by itself, without a restart, and nothing
/// appended before or after the outage is missing from the index.
/// </summary>
[Collection(ProcessesCollection.Name)]
public sealed class ProjectionOutageTests(SearchProcessesApp app)
{
    [Fact]
    public async Task Search_indexing_resumes_without_a_restart_after_the_database_was_away_longer_than_the_stale_node_timeout()
    {
        // A node of its own cluster (a process, on a database of its own: it runs the projections, as in production),
        // reaching PostgreSQL through a relay the test can cut. It checks in every 2 s and counts as stale after 4 s of silence.
        var database = new NpgsqlConnectionStringBuilder(await app.ProcessDatabaseAsync());
        await using var proxy = new TcpProxy(database.Host!, database.Port);
        var throughProxy = new NpgsqlConnectionStringBuilder(database.ConnectionString) { Host = "127.0.0.1", Port = proxy.Port };
        await using var node = await app.StartHostProcessAsync(new Dictionary<string, string>(FastCluster())
        {
            ["ConnectionStrings__Postgres"] = throughProxy.ConnectionString,
        });
        var user = ModularChatApp.NewUser("outage");
        using var client = node.Client(app.Token(user));
        var conversation = await client.StartConversation("outage", Message("the quartermaster counted the barrels"));
        await Eventually.Until(() => client.KeywordMatches("quartermaster"), n => n == 1, seconds: 90, what: "The node did not index before the outage");

        proxy.Cut();
        await Eventually.Until(
            async () => (await client.GetAsync("/health/ready")).StatusCode, status => status == HttpStatusCode.ServiceUnavailable,
            seconds: 60, what: "The node did not notice the outage");
        await Task.Delay(TimeSpan.FromSeconds(8)); // twice the stale-node timeout: the node's own record is stale when it is back
        proxy.Restore();

        await Eventually.Until(
            async () => (await client.GetAsync("/health/ready")).StatusCode, status => status == HttpStatusCode.OK,
            seconds: 60, what: "The node did not become ready again");
        (await client.PostJson($"/api/conversations/{conversation}/messages", new { role = "user", content = "the navigator charted the reef" }))
            .EnsureSuccessStatusCode();
        await Eventually.Until(() => client.KeywordMatches("navigator"), n => n == 1, seconds: 90, what: "Indexing did not resume after the outage");
        Assert.Equal(1, await client.KeywordMatches("quartermaster"));
        Assert.DoesNotContain("ProgressionProgressOutOfOrderException", node.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task While_the_database_is_away_the_projection_daemon_does_not_log_an_error_at_each_poll_the_outage_is_logged_once()
    {
        // A node of its own cluster that runs the projections (the daemon), as above, as fast to check in: its daemon started
        // indexing after ~18 s with the default settings, ~4 s with these.
        var database = new NpgsqlConnectionStringBuilder(await app.ProcessDatabaseAsync());
        await using var proxy = new TcpProxy(database.Host!, database.Port);
        var throughProxy = new NpgsqlConnectionStringBuilder(database.ConnectionString) { Host = "127.0.0.1", Port = proxy.Port };
        await using var node = await app.StartHostProcessAsync(new Dictionary<string, string>(FastCluster())
        {
            ["ConnectionStrings__Postgres"] = throughProxy.ConnectionString,
        });
        using var client = node.Client(app.Token(ModularChatApp.NewUser("daemon")));
        await client.StartConversation("daemon", Message("the cooper hooped the cask"));
        await Eventually.Until(() => client.KeywordMatches("cooper"), n => n == 1, seconds: 90, what: "The node's daemon did not index before the outage");
        var before = node.Output.Length;

        // 10 s away: the daemon logged "Failed while trying to detect high water statistics" at Error, with its stack trace,
        // every ~1.4 s (13 in 18 s).
        proxy.Cut();
        await Task.Delay(TimeSpan.FromSeconds(10));
        var duringOutage = node.Output[before..];
        proxy.Restore();

        Assert.Empty(Regex.Matches(duringOutage, @"(warn|fail|crit): Marten\.Events\.Daemon"));
        Assert.Single(Regex.Matches(duringOutage, "PostgreSQL is unreachable"));
        await Eventually.Until(() => Task.FromResult(node.Output[before..].Contains("PostgreSQL answers again", StringComparison.Ordinal)), found => found,
            seconds: 60, what: "The node did not log that PostgreSQL answers again");
    }
}
