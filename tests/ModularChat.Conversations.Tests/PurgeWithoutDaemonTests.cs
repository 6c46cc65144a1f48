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
    };
}

/// <summary>
/// A deleted conversation's events wait for the daemon's high-water mark (DeletionCascadeTests), but not for ever: with
/// no daemon running they are removed after <c>Conversations:PurgeMaxWait</c>.
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
        var last = await Scalar("select last_value from modularchat.mt_events_sequence");

        await Eventually.Until(() => Scalar("select count(*) from modularchat.mt_events where stream_id = @id"), left => left == 0,
            seconds: 30, what: "The deleted conversation's events are still there");
        Assert.True(await Scalar("select coalesce(max(last_seq_id), 0) from modularchat.mt_event_progression where name = 'HighWaterMark'") < last,
            "The high-water mark moved: the purge did not have to wait it out");
    }
}
