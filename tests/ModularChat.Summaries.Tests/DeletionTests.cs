using System.Net;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Summaries.Domain;
using ModularChat.Testing.Fakes;
using Npgsql;

namespace ModularChat.Summaries.Tests;

/// <summary>Deleting a conversation removes everything the module derived from it.</summary>
[Collection(AppCollection.Name)]
public sealed class DeletionTests(SummariesApp app)
{
    [Fact]
    public async Task Deleting_a_conversation_removes_its_summaries_stream_and_read_models()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 10));
        await client.SummaryCovering(id, 10);
        (await client.PostAsync($"/api/conversations/{id}/summary", null)).EnsureSuccessStatusCode();
        Assert.True(await RowsAbout(id) > 0);

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{id}")).StatusCode);

        await Eventually.Until(() => RowsAbout(id), rows => rows == 0);
        await (await client.GetAsync($"/api/conversations/{id}/summary")).ShouldBeProblem(404);
    }

    [Fact]
    public async Task A_conversation_deleted_while_its_events_are_on_their_way_leaves_nothing_behind()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 12));
        (await client.DeleteAsync($"/api/conversations/{id}")).EnsureSuccessStatusCode();

        // Whatever order the message events, the job and the deletion are handled in, the rows go: once nothing about the
        // conversation is queued any more (the notices, stored with the appends and the deletion, the job and what it sends),
        // nothing is left.
        await Eventually.Until(() => app.PendingEnvelopesAbout([id]), n => n == 0, Eventually.BackgroundSeconds, "messages about the conversation still queued");
        await Eventually.Until(() => RowsAbout(id), rows => rows == 0);
    }

    [Fact]
    public async Task A_conversation_deleted_while_the_model_writes_its_summary_leaves_nothing_behind()
    {
        // The test above leaves the order to chance; here it is fixed: the job has read the messages and waits for the
        // model when the conversation is deleted (and its rows purged), and the model answers afterwards.
        var topic = $"in-flight-{Guid.NewGuid():N}";
        using var slow = app.Llm.AnswerAbout(topic, new FakeReply($"They talked about {topic}.", Delay: TimeSpan.FromSeconds(3)));
        using var client = app.Client(app.LlmTenant);
        var id = await client.NewConversation();
        await client.AppendBatch(id, Api.Turns(1, 10, topic));
        await Eventually.Until(() => Task.FromResult(app.Llm.RequestsAbout(topic)), n => n >= 1, Eventually.BackgroundSeconds, "the summary job did not call the model");

        (await client.DeleteAsync($"/api/conversations/{id}")).EnsureSuccessStatusCode();
        await Task.Delay(TimeSpan.FromSeconds(3.5)); // the model has answered: the job goes on with a deleted conversation

        // Once nothing about the conversation is queued any more (the job, its retries, the checks it sends), nothing is left.
        await Eventually.Until(() => app.PendingEnvelopesAbout([id]), n => n == 0, Eventually.BackgroundSeconds, "messages about the conversation still queued");
        Assert.Equal(0, await RowsAbout(id));
        await (await client.GetAsync($"/api/conversations/{id}/summary")).ShouldBeProblem(404);
        Assert.Equal(1, app.Llm.RequestsAbout(topic)); // its job ended with the deletion: no retry asked the model again
    }

    [Fact]
    public async Task A_revision_appended_while_its_stream_is_removed_takes_no_sequence_numbers_the_daemon_would_wait_on()
    {
        // The job of revision 2 waits for the model when the summary stream's removal (after a deletion) locks the
        // stream's row, as DaemonProgress.RemoveStreamAsync does; the job's append comes to that row, the removal commits.
        var topic = $"purged-{Guid.NewGuid():N}";
        using var slow = app.Llm.AnswerAbout(topic, new FakeReply($"Then they talked about {topic}.", Delay: TimeSpan.FromSeconds(3)));
        using var client = app.Client(app.LlmTenant);
        var id = await client.NewConversation();
        await client.AppendBatch(id, Api.Turns(1, 10));
        await client.SummaryCovering(id, 10);
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        var before = await connection.ScalarAsync("select last_value from modularchat.mt_events_sequence");

        await client.AppendBatch(id, Api.Turns(11, 25, topic)); // the next milestone: revision 2
        await Eventually.Until(() => Task.FromResult(app.Llm.RequestsAbout(topic)), n => n >= 1, Eventually.BackgroundSeconds, "the summary job did not call the model");
        await using (var removal = await connection.BeginTransactionAsync())
        {
            var stream = SummaryStreams.For(id);
            await connection.ScalarAsync("select 1 from modularchat.mt_streams where id = $1 for update", stream);
            await using var observer = new NpgsqlConnection(app.PostgresConnectionString);
            await observer.OpenAsync();
            await Eventually.Until(
                () => observer.ScalarAsync("select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%mt_quick_append_events%'"),
                n => n > 0, Eventually.BackgroundSeconds, "the job's append did not reach the locked stream");
            await connection.ScalarAsync("delete from modularchat.mt_events where stream_id = $1", stream);
            await connection.ScalarAsync("delete from modularchat.mt_streams where id = $1", stream);
            await removal.CommitAsync();
        }

        (await client.DeleteAsync($"/api/conversations/{id}")).EnsureSuccessStatusCode();
        await Eventually.Until(() => app.PendingEnvelopesAbout([id]), n => n == 0, Eventually.BackgroundSeconds, "messages about the conversation still queued");

        // Once the daemon has read everything appended since, it has skipped no hole (it would have after 3 s).
        var after = await connection.ScalarAsync("select last_value from modularchat.mt_events_sequence");
        await Eventually.Until(() => connection.ScalarAsync("select coalesce(max(last_seq_id), 0) from modularchat.mt_event_progression where name = 'HighWaterMark'"),
            mark => mark >= after, Eventually.BackgroundSeconds, "the daemon's high-water mark did not reach the last event");
        Assert.Equal(0, await connection.ScalarAsync(
            "select count(*) from modularchat.mt_high_water_skips where ending_sequence > $1 and starting_sequence < $2", before, after));
    }

    [Fact]
    public async Task Deleting_a_conversation_discards_its_failed_jobs()
    {
        var topic = $"doomed-{Guid.NewGuid():N}";
        using var failing = app.Llm.AnswerAbout(topic, FakeReply.Error(500, "Model crashed."));
        using var client = app.Client(app.LlmTenant);
        var id = await client.NewConversation();
        await client.AppendBatch(id, Api.Turns(1, 10, topic));
        using var admin = app.Client(ModularChatApp.NewUser("admin"), app.LlmTenant, "admin");
        await Eventually.Until(Failures, f => f.Any(x => x.ConversationId == id));

        (await client.DeleteAsync($"/api/conversations/{id}")).EnsureSuccessStatusCode();

        await Eventually.Until(Failures, f => f.All(x => x.ConversationId != id));
        await Eventually.Until(() => RowsAbout(id), rows => rows == 0);

        async Task<List<FailureDto>> Failures()
            => (await (await admin.GetAsync("/api/admin/summaries/failures?limit=100")).ReadAs<FailuresPageDto>(HttpStatusCode.OK)).Items;
    }

    /// <summary>Rows of every table the module writes that mention the conversation (or its summary stream).</summary>
    private async Task<long> RowsAbout(Guid conversationId)
    {
        var schema = app.Host.Services.GetRequiredService<IDocumentStore>().Options.Schema;
        var stream = SummaryStreams.For(conversationId);
        var sql = $"""
            select (select count(*) from {schema.For<SummaryView>()} where id = @c)
                 + (select count(*) from {schema.For<SummaryRevisionView>()} where conversation_id = @c)
                 + (select count(*) from {schema.For<SummaryProgress>()} where id = @c)
                 + (select count(*) from {schema.For<SummaryClaim>()} where id = @c)
                 + (select count(*) from {schema.For<ConversationActivity>()} where id = @c)
                 + (select count(*) from {schema.ForEvents()} where stream_id = @s)
                 + (select count(*) from {schema.ForStreams()} where id = @s)
            """;
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        command.Parameters.AddWithValue("c", conversationId);
        command.Parameters.AddWithValue("s", stream);
        return (long)(await command.ExecuteScalarAsync())!;
    }
}
