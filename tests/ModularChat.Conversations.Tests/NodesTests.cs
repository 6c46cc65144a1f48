using System.Net;
using System.Net.Http.Headers;
using Alba;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;
using Wolverine.Runtime;

namespace ModularChat.Conversations.Tests;

internal sealed record NodeListDto(Guid Node, List<NodeDto> Nodes);

internal sealed record NodeDto(Guid Id, int WolverineNodeNumber, string Machine, int ProcessId, string Version, DateTimeOffset StartedAt,
    DateTimeOffset LastSeenAt, List<string> Agents, List<string> DifferentSettings);

/// <summary>
/// Nodes of one deployment record themselves in PostgreSQL: <c>GET /api/admin/nodes</c> lists the live ones with the agents
/// they run and the settings sections that differ, and each node warns about a node whose settings differ from its own.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class NodesTests(ConversationsApp app)
{
    private const string PeerLog = "ModularChat.Host.Nodes.PeerSettingsLog";

    [Fact]
    public async Task Two_nodes_with_the_same_settings_list_each_other_without_differences_or_warnings()
    {
        var mark = app.Logs.Entries.Count();
        await using var second = await app.StartHostAsync();
        var (firstId, secondId) = (NodeId(app.Host), NodeId(second));
        using var fromFirst = Operator(app.Host);
        using var fromSecond = Operator(second);

        // The first node runs the projections (the fixture's), the second none: each lists what it runs itself.
        var list = await Eventually.Until(() => Nodes(fromFirst), l => l.Nodes.Any(n => n.Id == secondId)
            && l.Nodes.Any(n => n.Id == firstId && n.Agents.Any(IsSearchProjection)), seconds: 30, what: "Both nodes, the first running the search projection");
        Assert.Equal(firstId, list.Node);
        var (first, other) = (list.Nodes.Single(n => n.Id == firstId), list.Nodes.Single(n => n.Id == secondId));
        Assert.Empty(first.DifferentSettings);
        Assert.Empty(other.DifferentSettings);
        Assert.DoesNotContain(other.Agents, IsSearchProjection);
        Assert.Equal((Environment.MachineName, Environment.ProcessId), (other.Machine, other.ProcessId));
        Assert.Equal(first.Version, other.Version);
        Assert.False(string.IsNullOrWhiteSpace(first.Version));
        Assert.Equal(app.Host.Services.GetRequiredService<IWolverineRuntime>().Options.Durability.AssignedNodeNumber, first.WolverineNodeNumber);

        var seenBySecond = await Nodes(fromSecond);
        Assert.Equal(secondId, seenBySecond.Node);
        Assert.Empty(seenBySecond.Nodes.Single(n => n.Id == firstId).DifferentSettings);

        // Each node has compared the other with itself (it says so once) and warned about neither.
        await Eventually.Until(() => Task.FromResult(PeerEntries(mark).ToList()),
            e => e.Any(l => l.Message.Contains($"({secondId}) is live", StringComparison.Ordinal))
                 && e.Any(l => l.Message.Contains($"({firstId}) is live", StringComparison.Ordinal)), seconds: 30, what: "Each node's comparison with the other");
        Assert.DoesNotContain(PeerEntries(mark), l => l.Level >= LogLevel.Warning && (l.Message.Contains(firstId.ToString(), StringComparison.Ordinal)
            || l.Message.Contains(secondId.ToString(), StringComparison.Ordinal)));
    }

    [Fact]
    public async Task A_node_with_another_retention_policy_and_milestones_is_listed_with_those_sections_and_warned_about_once()
    {
        var mark = app.Logs.Entries.Count();
        await using var second = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["Retention:Policy"] = "delete-after-summary",
            ["Summaries:Milestones"] = "5,10",
        });
        var (firstId, secondId) = (NodeId(app.Host), NodeId(second));
        using var fromFirst = Operator(app.Host);
        using var fromSecond = Operator(second);

        var list = await Eventually.Until(() => Nodes(fromFirst), l => l.Nodes.Any(n => n.Id == secondId), seconds: 30, what: "The second node");
        Assert.Equal(["Retention", "Summaries"], list.Nodes.Single(n => n.Id == secondId).DifferentSettings);
        Assert.Empty(list.Nodes.Single(n => n.Id == firstId).DifferentSettings);
        Assert.Equal(["Retention", "Summaries"], (await Nodes(fromSecond)).Nodes.Single(n => n.Id == firstId).DifferentSettings);

        // The first node warns at its next check, the second at its first: each names the other and the sections.
        bool AboutSecond(LogEntry l) => l.Level == LogLevel.Warning && l.Message.Contains($"({secondId})", StringComparison.Ordinal);
        bool AboutFirst(LogEntry l) => l.Level == LogLevel.Warning && l.Message.Contains($"({firstId})", StringComparison.Ordinal);
        var warning = (await Eventually.Until(() => Task.FromResult(PeerEntries(mark).Where(AboutSecond).ToList()), w => w.Count > 0, seconds: 30,
            what: "The first node's warning about the second")).Single();
        Assert.Contains("in Retention, Summaries:", warning.Message, StringComparison.Ordinal);
        Assert.Contains(Environment.MachineName, warning.Message, StringComparison.Ordinal);
        Assert.Contains(PeerEntries(mark), l => AboutFirst(l) && l.Message.Contains("in Retention, Summaries:", StringComparison.Ordinal));

        // Not again at the following checks: two more of the first node's, seen as its row's last check moving on twice.
        var seen = list.Nodes.Single(n => n.Id == firstId).LastSeenAt;
        for (var check = 0; check < 2; check++)
        {
            var before = seen;
            seen = (await Eventually.Until(() => Nodes(fromFirst), l => l.Nodes.Single(n => n.Id == firstId).LastSeenAt > before, seconds: 30,
                what: "Another check of the first node")).Nodes.Single(n => n.Id == firstId).LastSeenAt;
        }

        Assert.Single(PeerEntries(mark), AboutSecond);
        Assert.Single(PeerEntries(mark), AboutFirst);
    }

    [Fact]
    public async Task Secret_settings_are_never_compared_listed_stored_or_logged()
    {
        var secrets = new[] { $"sk-llm-{Guid.NewGuid():N}", $"sk-embed-{Guid.NewGuid():N}", $"pw-{Guid.NewGuid():N}" };
        var mark = app.Logs.Entries.Count();
        await using var second = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["Summaries:Llm:ApiKey"] = secrets[0],
            ["Search:Embeddings:ApiKey"] = secrets[1],
            // The test PostgreSQL trusts local connections: the password is not even asked for, only configured.
            ["ConnectionStrings:Postgres"] = $"{app.PostgresConnectionString};Password={secrets[2]}",
        });
        var (firstId, secondId) = (NodeId(app.Host), NodeId(second));
        using var fromFirst = Operator(app.Host);
        using var fromSecond = Operator(second);

        await Eventually.Until(() => Task.FromResult(PeerEntries(mark).ToList()),
            e => e.Any(l => l.Message.Contains($"({secondId}) is live", StringComparison.Ordinal)), seconds: 30,
            what: "The first node's comparison with the second (same settings, secrets aside)");
        var bodies = new List<string>();
        foreach (var client in new[] { fromFirst, fromSecond })
        {
            var response = await client.GetAsync("/api/admin/nodes");
            bodies.Add(await response.Content.ReadAsStringAsync());
            var list = await response.ReadAs<NodeListDto>(HttpStatusCode.OK);
            Assert.Empty(list.Nodes.Single(n => n.Id == firstId).DifferentSettings);
            Assert.Empty(list.Nodes.Single(n => n.Id == secondId).DifferentSettings);
        }

        var rows = await RowsAsync();
        foreach (var secret in secrets)
        {
            Assert.DoesNotContain(bodies, b => b.Contains(secret, StringComparison.Ordinal));
            Assert.DoesNotContain(secret, rows, StringComparison.Ordinal);
            Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(secret, StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task A_stopped_node_leaves_the_list_at_once()
    {
        var mark = app.Logs.Entries.Count();
        var second = await app.StartHostAsync();
        var secondId = NodeId(second);
        using var fromFirst = Operator(app.Host);
        try
        {
            await Eventually.Until(() => Nodes(fromFirst), l => l.Nodes.Any(n => n.Id == secondId), seconds: 30, what: "The second node");
            await Eventually.Until(() => Task.FromResult(PeerEntries(mark).ToList()),
                e => e.Any(l => l.Message.Contains($"({secondId}) is live", StringComparison.Ordinal)), seconds: 30, what: "The first node's check that saw it");
        }
        finally
        {
            await second.DisposeAsync();
        }

        // Removed as it stopped: well before the 25 s after which a silent node's row is ignored.
        await Eventually.Until(() => Nodes(fromFirst), l => l.Nodes.All(n => n.Id != secondId), seconds: 10, what: "The stopped node gone");
        await Eventually.Until(() => Task.FromResult(PeerEntries(mark).ToList()),
            e => e.Any(l => l.Message.Contains($"({secondId}) is gone", StringComparison.Ordinal)), seconds: 30, what: "The first node's notice");
    }

    [Fact]
    public async Task A_node_silent_for_longer_than_the_stale_timeout_is_not_listed_and_is_cleaned_away()
    {
        // What a killed node leaves: a row that is no longer refreshed (here, last seen a minute ago; the fixture's timeout is 25 s).
        var killed = Guid.NewGuid();
        await ExecuteAsync("""
            insert into modularchat.mc_nodes (id, wolverine_node_number, machine, process_id, version, started_at, last_seen, settings, agents)
            values ($1, 99, 'killed-node', 1, 'x', now() - interval '1 hour', now() - interval '1 minute', '{}', '{}')
            """, killed);
        using var fromFirst = Operator(app.Host);

        Assert.DoesNotContain((await Nodes(fromFirst)).Nodes, n => n.Id == killed);
        await Eventually.Until(() => RowsAsync(), rows => !rows.Contains(killed.ToString(), StringComparison.Ordinal), seconds: 30,
            what: "The silent node's row removed at the next check");
    }

    [Fact]
    public async Task The_node_list_is_for_the_services_operators_only()
    {
        using var user = app.Client(ModularChatApp.NewUser());
        Assert.Equal(HttpStatusCode.Forbidden, (await user.GetAsync("/api/admin/nodes")).StatusCode);
        using var tenantAdmin = app.Client(ModularChatApp.NewUser("admin"), roles: "admin"); // the deployment's nodes: not a tenant's business
        Assert.Equal(HttpStatusCode.Forbidden, (await tenantAdmin.GetAsync("/api/admin/nodes")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Host.Server.CreateClient().GetAsync("/api/admin/nodes")).StatusCode);
        using var client = Operator(app.Host);
        Assert.Contains((await Nodes(client)).Nodes, n => n.Id == NodeId(app.Host));
    }

    private static Guid NodeId(IAlbaHost host) => host.Services.GetRequiredService<IWolverineRuntime>().Options.UniqueNodeId;

    private static bool IsSearchProjection(string agent) => agent.Contains("searchentries", StringComparison.OrdinalIgnoreCase);

    private HttpClient Operator(IAlbaHost host)
    {
        var client = host.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser("operator"), null, "operator"));
        return client;
    }

    private static async Task<NodeListDto> Nodes(HttpClient client) => await (await client.GetAsync("/api/admin/nodes")).ReadAs<NodeListDto>(HttpStatusCode.OK);

    /// <summary>What the nodes logged about each other since <paramref name="mark"/> entries.</summary>
    private IEnumerable<LogEntry> PeerEntries(int mark) => app.Logs.Entries.Skip(mark).Where(l => l.Category == PeerLog);

    /// <summary>Every row of the node table as text.</summary>
    private async Task<string> RowsAsync()
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("select coalesce(string_agg(n::text, E'\\n'), '') from modularchat.mc_nodes n", connection);
        return (string)(await command.ExecuteScalarAsync())!;
    }

    private async Task ExecuteAsync(string sql, Guid id)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection) { Parameters = { new() { Value = id } } };
        await command.ExecuteNonQueryAsync();
    }
}
