using System.Net;
using Marten;
using Marten.Linq;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Domain;
using ModularChat.Conversations.Features.AppendMessage;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// Group commit: appends of a tenant that queue while its transactions are busy are written together, yet each
/// request keeps its own answer (201, 404, 409, duplicate) and the order it arrived in.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class AppendGroupTests(ConversationsApp app)
{
    [Fact]
    public async Task Appends_queued_behind_a_busy_transaction_are_written_together_and_each_keeps_its_own_answer()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var blocked = await client.NewConversation("group");
        var target = await client.NewConversation("group");

        // Hold the first conversation's stream lock: both of the tenant's writers (Conversations:AppendGroupConcurrency=2)
        // take an append to it and wait, so everything sent meanwhile queues.
        await using var holder = new NpgsqlConnection(app.PostgresConnectionString);
        await holder.OpenAsync();
        await using var lockTransaction = await holder.BeginTransactionAsync();
        await Execute(holder, "select 1 from modularchat.mt_streams where id = @id for update", blocked.Id);
        var waiting = new List<Task<HttpResponseMessage>>();
        for (var writer = 1; writer <= 2; writer++)
        {
            waiting.Add(client.PostJson($"/api/conversations/{blocked.Id}/messages", new { role = "user", content = $"held {writer}" }));
            await WaitForLockWaiters(writer);
        }

        // Sent one after the other, so they queue in this order.
        var single = $"/api/conversations/{target.Id}/messages";
        var queued = new List<Task<HttpResponseMessage>>();
        foreach (var (url, body) in new (string, object)[]
                 {
                     (single, new { role = "user", content = "first", externalId = "e1" }),
                     ($"/api/conversations/{Guid.NewGuid()}/messages", new { role = "user", content = "to nowhere" }),
                     (single, new { role = "user", content = "stale", expectedVersion = 999 }),
                     ($"{single}/batch", new { messages = new[] { new { role = "assistant", content = "first again", externalId = "e1" }, new { role = "assistant", content = "second", externalId = "e2" } } }),
                 })
        {
            queued.Add(client.PostJson(url, body));
            await Task.Delay(150);
        }

        await Task.Delay(300);
        Assert.All(queued, t => Assert.False(t.IsCompleted)); // still queued behind the lock
        await lockTransaction.RollbackAsync();

        Assert.All(await Task.WhenAll(waiting), r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        var first = await (await queued[0]).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        await (await queued[1]).ShouldBeProblem(404);
        await (await queued[2]).ShouldBeProblem(409);
        var batch = await (await queued[3]).ReadAs<BatchResponseDto>(HttpStatusCode.Created);

        Assert.Equal((1, "e1", false), (first.Sequence, first.ExternalId, first.Duplicate));
        Assert.Equal([(1L, "e1", true), (2L, "e2", false)], batch.Messages.Select(m => (m.Sequence, m.ExternalId!, m.Duplicate)));
        Assert.Equal(first.Id, batch.Messages[0].Id);
        Assert.Equal(target.Version + 2, batch.Version);

        // The two requests that stored something did so in one transaction.
        Assert.Single(await Transactions(target.Id));
        var page = await (await client.GetAsync($"/api/conversations/{target.Id}/messages")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal(["first", "second"], page.Items.Select(m => m.Content));
    }

    private static async Task Execute(NpgsqlConnection connection, string sql, Guid id)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        command.Parameters.AddWithValue("id", id);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>Waits until <paramref name="count"/> sessions of the test database wait for a row lock.</summary>
    private async Task WaitForLockWaiters(int count)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        for (var attempt = 0; attempt < 200; attempt++)
        {
            await using var command = new NpgsqlCommand(
                "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'", connection);
            if ((long)(await command.ExecuteScalarAsync())! >= count)
            {
                return;
            }

            await Task.Delay(50);
        }

        Assert.Fail($"{count} appends never waited for the held stream lock");
    }

    /// <summary>The distinct transactions (xmin) that wrote the message events of a conversation.</summary>
    private async Task<List<string>> Transactions(Guid streamId)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "select distinct xmin::text from modularchat.mt_events where stream_id = @id and type = 'message_appended'", connection);
        command.Parameters.AddWithValue("id", streamId);
        var result = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            result.Add(reader.GetString(0));
        }

        return result;
    }
}


/// <summary>
/// The idempotency lookup of an append: Npgsql prepares it, so PostgreSQL runs its generic plan, which must probe the
/// unique (tenant, conversation, external id) index rather than read the conversation's messages and filter them.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class ExternalIdLookupTests(ConversationsApp app)
{
    [Fact]
    public async Task The_generic_plan_of_the_external_id_lookup_is_one_probe_of_the_unique_index()
    {
        await using var session = app.Host.Services.GetRequiredService<IDocumentStore>().QuerySession("lookup-plan");
        var command = session.Query<StoredMessage>().Where(AppendGroups.WithExternalId(Guid.NewGuid(), "ext-1")).ToCommand(FetchType.FetchMany);

        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        // The plan PostgreSQL caches for the prepared statement (PostgreSQL 15 has no EXPLAIN (GENERIC_PLAN)).
        var sql = command.CommandText;
        var parameters = command.Parameters.ToList();
        for (var i = parameters.Count - 1; i >= 0; i--)
        {
            sql = sql.Replace(":" + parameters[i].ParameterName, $"${i + 1}", StringComparison.Ordinal);
        }

        var values = string.Join(", ", parameters.Select(p => $"'{p.Value}'"));
        await using (var prepare = new NpgsqlCommand($"prepare lookup as {sql}; set plan_cache_mode = force_generic_plan", connection))
        {
            await prepare.ExecuteNonQueryAsync();
        }

        var plan = new List<string>();
        await using (var explain = new NpgsqlCommand($"explain execute lookup({values})", connection))
        await using (var reader = await explain.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                plan.Add(reader.GetString(0));
            }
        }

        Assert.Contains(plan, line => line.Contains("ux_stored_message_external_id", StringComparison.Ordinal));
        Assert.Contains(plan, line => line.Contains("Index Cond", StringComparison.Ordinal) && line.Contains("external_id", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, line => line.Contains("Filter", StringComparison.Ordinal));
    }
}
