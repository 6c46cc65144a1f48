using System.Net;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>A host whose database no asynchronous daemon serves: its high-water mark never moves.</summary>
public sealed class NoDaemonApp() : ModularChatApp(TestDatabase("conversations_no_daemon"))
{
    protected override bool RunsAsyncProjections => false;

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Conversations:PurgeMaxWait"] = "00:00:02",
        ["Retention:MaxProjectionWait"] = "00:00:03",
        [$"Retention:Tenants:{ArchiveTenant}:Policy"] = "archive-after-summary",
        [$"Retention:Tenants:{ArchiveTenant}:KeepLast"] = "5",
    };

    /// <summary>What the host logs, every level.</summary>
    public CapturedLogs Logs { get; } = new();

    protected override void ConfigureServices(Microsoft.Extensions.DependencyInjection.IServiceCollection services)
        => Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton<Microsoft.Extensions.Logging.ILoggerProvider>(services, Logs);

    /// <summary>A tenant of this test run only (its first summary is the test's).</summary>
    public static readonly string ArchiveTenant = $"no-daemon-archive-{Guid.NewGuid():N}";
}

/// <summary>
/// What removes events from the store waits for Marten's daemon to have read them, but not for ever: with no daemon
/// running, a deleted conversation's events are removed after <c>Conversations:PurgeMaxWait</c>, and a retention step
/// compacts after <c>Retention:MaxProjectionWait</c> (not at once, as it would without the wait).
/// </summary>
public sealed class PurgeWithoutDaemonTests(NoDaemonApp app) : IClassFixture<NoDaemonApp>
{
    [Fact]
    public async Task A_deleted_conversations_events_are_removed_after_the_longest_wait_when_the_daemon_does_not_move()
    {
        using var client = app.Client(ModularChatApp.NewUser("purge-no-daemon"));
        var id = (await (await client.PostJson("/api/conversations", new { title = "purged" })).ReadAs<ConversationDto>(HttpStatusCode.Created)).Id;
        await (await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "soon gone" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        async Task<long> Scalar(string sql)
        {
            await using var command = new NpgsqlCommand(sql, connection);
            command.Parameters.AddWithValue("id", id);
            return await command.ExecuteScalarAsync() is long value ? value : 0;
        }

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{id}")).StatusCode);

        await Eventually.Until(() => Scalar("select count(*) from modularchat.mt_events where stream_id = @id"), left => left == 0,
            seconds: Eventually.BackgroundSeconds, what: "The deleted conversation's events are still there");
        // The purge went ahead without the daemon, and only once it had waited PurgeMaxWait (2 s) since the deletion (it
        // says so right after its removal has committed).
        bool IsPurge(LogEntry e) => e.Level == Microsoft.Extensions.Logging.LogLevel.Warning
            && e.Message.StartsWith($"Purged deleted conversation {id} after ", StringComparison.Ordinal);
        await Eventually.Until(() => Task.FromResult(app.Logs.Entries.Count(IsPurge)), n => n > 0, seconds: 60, what: "The purge never said it went ahead without the daemon");
        var purged = Assert.Single(app.Logs.Entries, IsPurge);
        var waited = TimeSpan.Parse(purged.Message.Split(" after ")[1].Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(waited >= TimeSpan.FromSeconds(2), $"The purge waited only {waited}: {purged.Message}");
    }

    [Fact]
    public async Task A_retention_step_waits_for_the_projections_to_read_what_it_compacts_at_most_the_longest_wait()
    {
        using var client = app.Client(ModularChatApp.NewUser("retention-no-daemon"), NoDaemonApp.ArchiveTenant);
        var id = (await (await client.PostJson("/api/conversations", new { title = "retained" })).ReadAs<ConversationDto>(HttpStatusCode.Created)).Id;
        var messages = Enumerable.Range(1, 12).Select(i => new { role = "user", content = $"Message {i} before the summary." });
        await (await client.PostJson($"/api/conversations/{id}/messages/batch", new { messages })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);

        // The summary (milestone 10) lets retention archive 1-7; no projection reads the events, so the step waits out
        // Retention:MaxProjectionWait (3 s) from the summary on, then goes ahead.
        var view = await Eventually.Until(
            async () => await (await client.GetAsync($"/api/conversations/{id}/retention")).ReadAs<RetentionViewDto>(HttpStatusCode.OK),
            v => v.Archived.Count > 0, seconds: Eventually.BackgroundSeconds, what: "Retention never archived");
        Assert.Equal((1L, 7L), (view.Archived[0].FromSequence, view.Archived[0].ToSequence));
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            """
            select extract(epoch from (select max(timestamp) from modularchat.mt_events where stream_id = @id and type = 'retention_applied')
                 - (select min(timestamp) from modularchat.mt_events where type = 'summary_revised' and tenant_id = @tenant))
            """, connection);
        command.Parameters.AddWithValue("id", id);
        command.Parameters.AddWithValue("tenant", NoDaemonApp.ArchiveTenant);
        var seconds = Convert.ToDouble(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(seconds >= 2.9, $"Retention compacted {seconds:0.00} s after the summary: it did not wait for the projections");
    }
}
