using System.Diagnostics.Metrics;
using System.Net;
using System.Text.Json;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Telemetry;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// Each node looks at how far the asynchronous projections are behind the event store: a gauge, one warning when one
/// behind stands still, one line when it moves again; its readiness is Degraded while one stands still.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class ProjectionLagTests(ConversationsApp app)
{
    private const string Search = "SearchEntries:All";
    private const string Category = "ModularChat.Host.Infrastructure.ProjectionLagMonitor";

    [Fact]
    public async Task A_projection_behind_that_stands_still_is_warned_about_once_counted_degrades_readiness_and_is_said_to_move_again_when_it_does()
    {
        // A node started beside the fixture's runs no projections: on a database of its own, nothing reads its events (as
        // when the daemon running search indexing failed for good, or no node runs it). Empty: the figures below count every
        // event in it.
        var database = await app.EmptyDatabaseOfItsOwnAsync("projection_lag");
        var logs = new CapturedLogs();
        await using var node = await app.StartHostAsync(
            new Dictionary<string, string?>
            {
                ["ConnectionStrings:Postgres"] = database,
                ["Messaging:ProjectionLagInterval"] = "00:00:00.200",
                ["Messaging:ProjectionStallWarning"] = "00:00:01",
            },
            services => services.AddSingleton<ILoggerProvider>(logs));
        using var lag = new MetricCollector<long>(node.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.ProjectionLag);
        using var client = app.Client(node, ModularChatApp.NewUser("projection-lag"));
        var created = await (await client.PostJson("/api/conversations", new { title = "lag" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await (await client.PostJson($"/api/conversations/{created.Id}/messages", new { role = "user", content = "unread" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        await Eventually.Until(() => Task.FromResult(Stalled(logs)), n => n > 0, what: "the warning about the projection standing still");
        // The lag when it had stood still that long: 1 when the append came more than 1 s after the conversation's start
        // (a CI run), else 2. The gauge follows every look: 2, the start and the message.
        var warning = logs.Entries.First(IsStalled);
        Assert.Matches(@"^The asynchronous projection SearchEntries:All is [12] events behind and has not moved for ", warning.Message);
        Assert.Contains("Messaging:ProjectionStallWarning", warning.Message, StringComparison.Ordinal);
        Assert.Equal(2, await Eventually.Until(() => Task.FromResult(SearchLag(lag)), l => l == 2, what: "the gauge of the projection's lag"));

        // Readiness says so too: Degraded (still 200: a load balancer keeps the node), naming the projection.
        using var anonymous = node.Server.CreateClient();
        var (status, readiness) = await ReadinessAsync(anonymous);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("Degraded", readiness.GetProperty("status").GetString());
        var projections = readiness.GetProperty("checks").GetProperty("projections");
        Assert.Equal("Degraded", projections.GetProperty("status").GetString());
        Assert.Contains(Search, projections.GetProperty("description").GetString(), StringComparison.Ordinal);

        // The projection runs (a daemon of the test's on the node's store): the node says so, once, and the gauge falls to 0.
        var store = node.Services.GetRequiredService<IDocumentStore>();
        using var daemon = await store.BuildProjectionDaemonAsync();
        await daemon.StartAllAsync();
        try
        {
            await Eventually.Until(() => Task.FromResult(MovedAgain(logs)), n => n > 0, what: "the line saying the projection moves again");
            Assert.Equal(0, await Eventually.Until(() => Task.FromResult(SearchLag(lag)), l => l == 0, what: "the gauge back at 0"));
            (status, readiness) = await ReadinessAsync(anonymous);
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal("Healthy", readiness.GetProperty("checks").GetProperty("projections").GetProperty("status").GetString());
        }
        finally
        {
            await daemon.StopAllAsync();
        }

        Assert.Equal(1, Stalled(logs)); // once, not at every look while it stood still
        Assert.Equal(1, MovedAgain(logs));
    }

    private static bool IsStalled(LogEntry e)
        => e.Category == Category && e.Level == LogLevel.Warning && e.Message.StartsWith($"The asynchronous projection {Search} is", StringComparison.Ordinal);

    private static int Stalled(CapturedLogs logs) => logs.Entries.Count(IsStalled);

    private static int MovedAgain(CapturedLogs logs)
        => logs.Entries.Count(e => e.Category == Category && e.Level == LogLevel.Information && e.Message.StartsWith($"The asynchronous projection {Search} moves again", StringComparison.Ordinal));

    private static async Task<(HttpStatusCode Status, JsonElement Body)> ReadinessAsync(HttpClient anonymous)
    {
        using var response = await anonymous.GetAsync("/health/ready");
        return (response.StatusCode, JsonSerializer.Deserialize<JsonElement>(await response.Content.ReadAsStringAsync()));
    }

    /// <summary>The search projection's lag at the gauge's next reading (-1 when it has none yet).</summary>
    private static long SearchLag(MetricCollector<long> lag)
    {
        lag.RecordObservableInstruments();
        return lag.GetMeasurementSnapshot().LastOrDefault(m => m.Tags.TryGetValue("projection", out var p) && Equals(p, Search))?.Value ?? -1;
    }
}
