using System.Net;
using System.Text;
using System.Text.Json;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;
using ModularChat.Conversations.Features.Retention;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// Retention end to end, with the real Summaries module: 12 messages cross the first summary milestone (10), the
/// summary covers what its job saw, and the policy acts on what it covers except the last N.
/// </summary>
[Collection(RetentionCollection.Name)]
public sealed class RetentionTests(RetentionApp app)
{
    [Fact]
    public async Task Delete_after_summary_removes_covered_messages_for_real_and_keeps_the_last_n()
    {
        using var client = app.Client(ModularChatApp.NewUser("deleter"), RetentionTenants.Delete);
        var id = await ConversationWith(client, 12);

        // Covered: 1-12; the last 5 (8-12) stay: 1-7 go.
        var view = await WaitForRetention(client, id, v => v.Deleted.Count > 0);
        Assert.Equal((1L, 7L, 7L), (view.Deleted[0].FromSequence, view.Deleted[0].ToSequence, view.Deleted[0].Messages));
        Assert.Equal((8L, 12L), (view.Hot!.FromSequence, view.Hot.ToSequence));
        Assert.Empty(view.Archived);

        var messages = await Messages(client, id, includeArchived: true);
        Assert.Equal(Enumerable.Range(8, 5).Select(i => (long)i), messages.Select(m => m.Sequence));
        await (await client.GetAsync($"/api/conversations/{id}/messages/3?includeArchived=true")).ShouldBeProblem(404);

        // Gone from the database itself, not only from the API.
        Assert.Empty(await RowsMentioning("message number 3 of", id));
        Assert.Equal(5, await CountRowsMentioning("message number", id, "mt_doc_storedmessage"));

        // The conversation goes on: appends, context and the summary still work.
        await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "after retention" });
        var context = await (await client.GetAsync($"/api/conversations/{id}/context?maxTokens=100000")).ReadAs<ContextDto>(HttpStatusCode.OK);
        Assert.Equal(13, context.Messages[^1].Sequence);
        Assert.InRange(context.Summary!.ToSequence, 10, 12);
    }

    [Theory]
    [InlineData(nameof(RetentionTenants.Delete))]
    [InlineData(nameof(RetentionTenants.Archive))]
    public async Task An_append_retried_with_the_external_id_of_a_message_retention_took_away_answers_the_original(string policy)
    {
        var tenant = policy == nameof(RetentionTenants.Delete) ? RetentionTenants.Delete : RetentionTenants.Archive;
        using var client = app.Client(ModularChatApp.NewUser("retrier"), tenant);
        var id = await ConversationWith(client, 12, externalIds: true);
        await WaitForRetention(client, id, v => v.Deleted is [{ ToSequence: 7 }] || v.Archived is [{ ToSequence: 7 }]);

        var retry = await (await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = Content(3), externalId = "ext-3" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.OK);
        Assert.Equal((3L, true, "ext-3"), (retry.Sequence, retry.Duplicate, retry.ExternalId));

        // The whole import sent again (a client that lost the first answer): nothing new, every message its original.
        var again = await (await client.PostJson($"/api/conversations/{id}/messages/batch", Batch(12, externalIds: true))).ReadAs<BatchResponseDto>(HttpStatusCode.OK);
        Assert.All(again.Messages, m => Assert.True(m.Duplicate));
        Assert.Equal(Sequences(1, 12), again.Messages.Select(m => m.Sequence));
        Assert.Equal(12, (await (await client.GetAsync($"/api/conversations/{id}")).ReadAs<ConversationDto>(HttpStatusCode.OK)).MessageCount);
    }

    [Fact]
    public async Task Messages_an_older_build_archived_without_keys_get_them_at_start_and_a_retry_answers_the_original()
    {
        using var client = app.Client(ModularChatApp.NewUser("upgraded"), RetentionTenants.Archive);
        var id = await ConversationWith(client, 12, externalIds: true);
        await WaitForRetention(client, id, v => v.Archived is [{ ToSequence: 7 }]);

        // Rows a statement on this conversation changes (or, for a query, returns).
        async Task<int> Sql(string sql)
        {
            await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand(sql, connection);
            command.Parameters.Add(new NpgsqlParameter { Value = id });
            if (!sql.StartsWith("select", StringComparison.Ordinal))
            {
                return await command.ExecuteNonQueryAsync();
            }

            await using var reader = await command.ExecuteReaderAsync();
            var rows = 0;
            while (await reader.ReadAsync())
            {
                rows++;
            }

            return rows;
        }

        // As a build before 2026-12-03 left it: the archive, and no key of the messages it holds.
        Assert.Equal(7, await Sql("delete from modularchat.mt_doc_retiredexternalid where conversation_id = $1"));

        // What a node does at start (in the background); then a second pass finds nothing left to do.
        var backfill = app.Host.Services.GetRequiredService<RetiredKeysBackfill>();
        Assert.Contains(app.Host.Services.GetServices<Microsoft.Extensions.Hosting.IHostedService>(), s => ReferenceEquals(s, backfill));
        Assert.InRange(await backfill.RunAsync(CancellationToken.None), 7, int.MaxValue);
        Assert.Equal(0, await backfill.RunAsync(CancellationToken.None));

        // A later pass reads only what was archived since the last complete one (less an hour), not the whole archive:
        // a key missing from a row written two days ago stays missing...
        Assert.Equal(1, await Sql("delete from modularchat.mt_doc_retiredexternalid where conversation_id = $1 and (data ->> 'Sequence')::bigint = 1"));
        Assert.Equal(1, await Sql("update modularchat.mt_doc_archivedmessage set mt_last_modified = now() - interval '2 days' where conversation_id = $1 and sequence = 1"));
        Assert.Equal(0, await backfill.RunAsync(CancellationToken.None));
        Assert.Equal(6, await Sql("select 1 from modularchat.mt_doc_retiredexternalid where conversation_id = $1"));
        // ...while a pass with no mark, the first after an upgrade, reads it all.
        await Sql("delete from modularchat.mt_doc_retiredkeysbackfillmark");
        Assert.InRange(await backfill.RunAsync(CancellationToken.None), 1, int.MaxValue);
        Assert.Equal(7, await Sql("select 1 from modularchat.mt_doc_retiredexternalid where conversation_id = $1"));

        var retry = await (await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = Content(3), externalId = "ext-3" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.OK);
        Assert.Equal((3L, true, "ext-3"), (retry.Sequence, retry.Duplicate, retry.ExternalId));
        Assert.Equal(12, (await (await client.GetAsync($"/api/conversations/{id}")).ReadAs<ConversationDto>(HttpStatusCode.OK)).MessageCount);
    }

    [Fact]
    public async Task Retention_does_not_change_the_version_clients_pass_as_expected_version()
    {
        using var client = app.Client(ModularChatApp.NewUser("versioned"), RetentionTenants.Delete);
        var c = await (await client.PostJson("/api/conversations", new { title = "retention" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var batch = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", Batch(12, externalIds: false))).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        await WaitForRetention(client, c.Id, v => v.Deleted is [{ ToSequence: 7 }]);

        // The client goes on from the version of its last answer: retention ran in between, the client changed nothing.
        Assert.Equal(batch.Version, (await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK)).Version);
        var next = await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "next", expectedVersion = batch.Version }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        Assert.Equal(batch.Version + 1, next.Version);

        // A client's own change still moves it, and a stale version is still refused.
        var renamed = await (await client.PatchJson($"/api/conversations/{c.Id}", new { title = "renamed", expectedVersion = next.Version })).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(next.Version + 1, renamed.Version);
        await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "stale", expectedVersion = next.Version })).ShouldBeProblem(409);
    }

    [Fact]
    public async Task The_retention_command_applies_a_policy_given_to_it_in_development_as_in_production()
    {
        // The service runs this tenant under keep-all; the command is given delete-after-summary (KeepLast 5).
        var (tenant, client, id) = await SummarizedAndIndexedAsync("retention-command");
        using var _ = client;

        var (exit, output) = await app.RunHostCommandAsync(
            new Dictionary<string, string>
            {
                ["ASPNETCORE_ENVIRONMENT"] = "Development", // where the container validates scopes
                [$"Retention__Tenants__{tenant}__Policy"] = "delete-after-summary",
                [$"Retention__Tenants__{tenant}__KeepLast"] = "5",
            },
            "retention", "--tenant", tenant);

        Assert.True(exit == 0, output);
        Assert.Contains("1 changed", output, StringComparison.Ordinal);
        var view = await (await client.GetAsync($"/api/conversations/{id}/retention")).ReadAs<RetentionViewDto>(HttpStatusCode.OK);
        Assert.Equal([(1L, 7L)], view.Deleted.Select(r => (r.FromSequence, r.ToSequence)));
    }

    [Fact]
    public async Task The_retention_command_neither_leads_the_nodes_nor_takes_their_work_while_it_runs()
    {
        // A command that starts the host (retention, summaries) checks in with Wolverine's cluster while it runs, and does
        // its own work, not the nodes'. It used to be a node like the others: with no other node in the cluster (this
        // fixture's host runs everything itself, in solo mode, outside it), it took the lead at its first check and started
        // every projection next to the host's own. Two daemons on one projection: one of them failed
        // (ProgressionProgressOutOfOrderException, which Wolverine does not restart), and the fixture's search indexing
        // and the retention waiting for it stopped for the rest of the run.
        var (tenant, client, id) = await SummarizedAndIndexedAsync("retention-beside");
        using var _ = client;

        // The test holds the conversation's stream row: the command waits for it, running and checking in, until released.
        await using var holder = new NpgsqlConnection(app.PostgresConnectionString);
        await holder.OpenAsync();
        await using var hold = await holder.BeginTransactionAsync();
        Assert.Equal(1, await holder.ScalarAsync("select 1 from modularchat.mt_streams where id = $1 for update", id));
        var before = await NowAsync(holder);
        var run = app.RunHostCommandAsync(
            new Dictionary<string, string>
            {
                ["Messaging__HealthCheckInterval"] = "00:00:00.200",
                ["Summaries__Sweep__Interval"] = "00:00:01", // the nodes' scheduled sweep, were it to run in the command
                [$"Retention__Tenants__{tenant}__Policy"] = "delete-after-summary",
                [$"Retention__Tenants__{tenant}__KeepLast"] = "5",
            },
            "retention", "--tenant", tenant);

        // Its node has checked in for 8 s since it started (the first check at 3 s, then every 0.2 s: about 25 checks), each
        // a chance to take the lead.
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        var node = await Eventually.Until(() => CommandNodeAsync(connection, before), n => n is { } x && x.LastCheck - x.Started >= TimeSpan.FromSeconds(8),
            what: "the command's node checking in for 8 s");
        Assert.False(run.IsCompleted, "The command did not wait for the conversation the test holds");

        Assert.DoesNotContain(node!.Value.Capabilities, c => c.StartsWith("event-subscriptions:", StringComparison.Ordinal)); // it offers to run no projection
        Assert.Equal(0, await connection.ScalarAsync("select count(*) from modularchat.wolverine_node_assignments"));
        Assert.Equal(0, await connection.ScalarAsync(
            "select count(*) from modularchat.wolverine_node_records where node_number = $1 and event_name <> 'NodeStarted'", node.Value.Number));
        Assert.Equal(0, await connection.ScalarAsync("select count(*) from modularchat.mc_nodes where wolverine_node_number = $1", node.Value.Number)); // not listed as a node
        // Nor does it do the work any node could do (the embeddings, the clean-ups, the sweeps): no sweep since it started.
        Assert.Equal(0, await connection.ScalarAsync("select count(*) from modularchat.mt_doc_summarysweeprecord where mt_last_modified >= $1", before));

        await hold.CommitAsync();
        var (exit, output) = await run;
        Assert.True(exit == 0, output);
        Assert.Contains("1 changed", output, StringComparison.Ordinal);
        Assert.Equal(0, await connection.ScalarAsync("select count(*) from modularchat.wolverine_node_assignments"));
    }

    /// <summary>
    /// A conversation of 12 messages of a new tenant (kept whole by the service), summarized through 12 and indexed for
    /// search: what a retention command given a policy for the tenant acts on.
    /// </summary>
    private async Task<(string Tenant, HttpClient Client, Guid Id)> SummarizedAndIndexedAsync(string name)
    {
        var tenant = ModularChatApp.NewUser(name);
        var client = app.Client(ModularChatApp.NewUser("operator"), tenant);
        var id = await ConversationWith(client, 12);
        await client.WaitForSummary(id);
        Assert.Equal(12, await SummaryThrough(client, id));
        await Eventually.Until(() => SearchEntrySequences(id), s => s.Count == 12, what: "the messages indexed for search");
        return (tenant, client, id);
    }

    private static async Task<DateTimeOffset> NowAsync(NpgsqlConnection connection)
    {
        await using var command = new NpgsqlCommand("select now()", connection);
        return new DateTimeOffset((DateTime)(await command.ExecuteScalarAsync())!); // timestamptz: a UTC DateTime
    }

    /// <summary>
    /// The Wolverine node a command process registered on this fixture's database since <paramref name="since"/> (the
    /// fixture's host, in solo mode, registers none).
    /// </summary>
    private static async Task<(int Number, DateTimeOffset Started, DateTimeOffset LastCheck, string[] Capabilities)?> CommandNodeAsync(NpgsqlConnection connection, DateTimeOffset since)
    {
        await using var command = new NpgsqlCommand(
            "select node_number, started, health_check, coalesce(capabilities, '{}') from modularchat.wolverine_nodes where started >= $1 order by started desc limit 1",
            connection);
        command.Parameters.Add(new NpgsqlParameter { Value = since });
        await using var reader = await command.ExecuteReaderAsync();
        return await reader.ReadAsync()
            ? (reader.GetInt32(0), reader.GetFieldValue<DateTimeOffset>(1), reader.GetFieldValue<DateTimeOffset>(2), reader.GetFieldValue<string[]>(3))
            : null;
    }

    [Fact]
    public async Task Archive_after_summary_moves_covered_messages_out_of_the_stream_but_keeps_them_readable()
    {
        using var client = app.Client(ModularChatApp.NewUser("archiver"), RetentionTenants.Archive);
        var id = await ConversationWith(client, 12);

        var view = await WaitForRetention(client, id, v => v.Archived.Count > 0);
        Assert.Equal((1L, 7L), (view.Archived[0].FromSequence, view.Archived[0].ToSequence));
        Assert.Equal(view.Hot!.Bytes + view.Archived[0].Bytes, view.BytesKept);

        var hot = await Messages(client, id, includeArchived: false);
        Assert.Equal(8, hot[0].Sequence);
        var all = await Messages(client, id, includeArchived: true);
        Assert.Equal(Enumerable.Range(1, 12).Select(i => (long)i), all.Select(m => m.Sequence));
        Assert.Equal("Message number 3 of the conversation talks about topic 21.", all[2].Content);

        // Paging through the archive and the hot messages together, both ways.
        var backward = await Messages(client, id, includeArchived: true, direction: "backward", limit: 4);
        Assert.Equal(Enumerable.Range(1, 12).Reverse().Select(i => (long)i), backward.Select(m => m.Sequence));

        // Out of the event stream: only the archive holds them.
        Assert.Equal(0, await CountRowsMentioning("message number 3 of", id, "mt_events"));
        Assert.Equal(1, await CountRowsMentioning("message number 3 of", id, "mt_doc_archivedmessage"));
    }

    [Fact]
    public async Task Archived_messages_stay_searchable_when_the_search_read_model_is_rebuilt()
    {
        using var client = app.Client(ModularChatApp.NewUser("archive-search"), RetentionTenants.Archive);
        var (id, _) = await ArchivedThroughSeven(client);
        await Eventually.Until(() => SearchEntrySequences(id), s => s.Count == 12);
        Assert.Equal(0, await CountRowsMentioning("message number 3 of", id, "mt_events"));

        // A second step (the summary at 25 covers 1-25: 8-20 go) compacts the stream past the first step's event, which
        // was appended after message 12: the stream keeps one retention event, the second's.
        await Append(client, id, 13, 25);
        await WaitForRetention(client, id, v => v.Archived is [{ FromSequence: 1, ToSequence: 20 }]);
        await Eventually.Until(() => SearchEntrySequences(id), s => s.Count == 25);
        Assert.Equal(1, await RetentionEventsIn(id));

        // A rebuild replays the event stream, which no longer holds messages 1-20: they come from the archive.
        using var admin = app.Client(ModularChatApp.NewUser("operator"), RetentionTenants.Archive, "operator");
        (await admin.PostAsync("/api/admin/search/rebuild", null)).EnsureSuccessStatusCode();
        var status = await Eventually.Until(
            async () => await (await admin.GetAsync("/api/admin/search/rebuild")).ReadAs<JsonElement>(HttpStatusCode.OK),
            s => s.GetProperty("state").GetString() is "succeeded" or "failed", seconds: 120);
        Assert.Equal("succeeded", status.GetProperty("state").GetString());

        Assert.Equal(Enumerable.Range(1, 25).Select(i => (long)i), await Eventually.Until(() => SearchEntrySequences(id), s => s.Count == 25));
        var hits = await (await client.GetAsync($"/api/search?q=topic+21&conversationId={id}")).ReadAs<JsonElement>(HttpStatusCode.OK);
        Assert.Contains(hits.GetProperty("hits").EnumerateArray(),
            h => h.GetProperty("conversationId").GetGuid() == id && h.GetProperty("sequence").GetInt64() == 3);
    }

    /// <summary>The retention events left in the conversation's stream (compaction folds those before the compacted version).</summary>
    private async Task<long> RetentionEventsIn(Guid conversationId)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("select count(*) from modularchat.mt_events where stream_id = $1 and type = 'retention_applied'", connection);
        command.Parameters.Add(new NpgsqlParameter { Value = conversationId });
        return (long)(await command.ExecuteScalarAsync())!;
    }

    [Fact]
    public async Task Messages_appended_between_the_plan_and_the_lock_are_kept_and_the_step_is_exactly_what_was_planned()
    {
        var tenant = RetentionTenants.Archive;
        using var client = app.Client(ModularChatApp.NewUser("race"), tenant);
        var (id, covered) = await ArchivedThroughSeven(client);

        // KeepLast is 5: with covered + 4 messages the policy may go up to covered - 1 now.
        await Append(client, id, 13, covered + 4);
        var executor = app.Host.Services.GetRequiredService<RetentionExecutor>();
        await using var session = Store.LightweightSession(tenant);
        var plan = await executor.PlanAsync(session, id, CancellationToken.None);
        Assert.Equal((8L, covered - 1), (plan!.Step.FromSequence, plan.Step.ToSequence));

        // Appended after the plan was read, before it takes the lock: they must not be touched, and they let the policy go one further.
        Assert.Equal([covered + 5, covered + 6], await Append(client, id, covered + 5, covered + 6));

        var outcome = await executor.CommitAsync(session, plan, CancellationToken.None);
        var applied = outcome.Applied!;
        Assert.Equal(
            (RetentionAction.Archived, 8L, covered - 1, covered - 8, ContentBytes(8, covered - 1)),
            (applied.Action, applied.FromSequence, applied.ToSequence, applied.Messages, applied.Bytes));
        Assert.True(outcome.MoreDue);

        // Nothing kept is lost: every message once, gap-free, with its own content; the archive holds exactly the archived ones.
        await AssertAllMessages(client, id, covered + 6);
        Assert.Equal(Sequences(1, covered - 1), await ArchivedSequences(id));
        Assert.Equal(covered, (await Messages(client, id, includeArchived: false))[0].Sequence);
        var view = await (await client.GetAsync($"/api/conversations/{id}/retention")).ReadAs<RetentionViewDto>(HttpStatusCode.OK);
        Assert.Equal([(1L, covered - 1, covered - 1)], view.Archived.Select(r => (r.FromSequence, r.ToSequence, r.Messages)));
        Assert.Equal((covered, covered + 6, ContentBytes(covered, covered + 6)), (view.Hot!.FromSequence, view.Hot.ToSequence, view.Hot.Bytes));

        // The next run (the handler queues it) takes the rest the summary covers.
        await using var next = Store.LightweightSession(tenant);
        var rest = await executor.ApplyAsync(next, id, CancellationToken.None);
        Assert.Equal((covered, covered, 1L, false), (rest.Applied!.FromSequence, rest.Applied.ToSequence, rest.Applied.Messages, rest.MoreDue));
        await AssertAllMessages(client, id, covered + 6);
        Assert.Equal(Sequences(1, covered), await ArchivedSequences(id));
    }

    [Fact]
    public async Task A_run_that_finds_messages_appended_while_it_waited_for_the_lock_queues_the_next_run_itself()
    {
        var tenant = RetentionTenants.Archive;
        using var client = app.Client(ModularChatApp.NewUser("requeue"), tenant);
        var (id, covered) = await ArchivedThroughSeven(client);
        await Append(client, id, 13, covered + 4); // KeepLast is 5: the policy may go up to covered - 1 now

        // An append holds the conversation's lock while a run plans its step and then waits for the lock.
        await using var appending = Store.LightweightSession(tenant);
        var stream = await appending.Events.FetchForExclusiveWriting<Conversation>(id);
        var run = app.Host.Services.GetRequiredService<Wolverine.IMessageBus>().InvokeForTenantAsync(tenant, new ApplyRetention(id));
        await app.WaitForLockWaiters(1);

        // The append commits two messages: the policy may now go one further than the run planned.
        var at = DateTimeOffset.UtcNow;
        stream.AppendMany(Sequences(covered + 5, covered + 6).Select(i => (object)new MessageAppended(
            id, Guid.CreateVersion7(), i, i % 2 == 1 ? MessageRole.User : MessageRole.Assistant, Content(i), null, null, at, at, 12)));
        await appending.SaveChangesAsync();
        await run;

        // The run committed what it planned and queued the next run with it, which takes the rest: nothing else triggers it.
        var view = await WaitForRetention(client, id, v => v.Archived is [{ } range] && range.ToSequence == covered);
        Assert.Equal([(1L, covered)], view.Archived.Select(r => (r.FromSequence, r.ToSequence)));
        Assert.Equal(3, await app.CountEvents(id, "retention_applied")); // 1-7, then 8 to covered - 1, then covered
        await AssertAllMessages(client, id, covered + 6);
    }

    [Fact]
    public async Task Retention_runs_racing_with_appends_keep_every_message_once_and_count_what_they_archive()
    {
        var tenant = RetentionTenants.Archive;
        using var client = app.Client(ModularChatApp.NewUser("racing"), tenant);
        var (id, covered) = await ArchivedThroughSeven(client);

        // Messages 13-24 while retention runs over and over, as the service runs it: each run may go one message
        // further (KeepLast is 5) until the summary's end, while the next message is being appended.
        var bus = app.Host.Services.GetRequiredService<Wolverine.IMessageBus>();
        var appending = Append(client, id, 13, 24);
        while (!appending.IsCompleted)
        {
            await bus.InvokeForTenantAsync(tenant, new ApplyRetention(id));
        }

        Assert.Equal(Sequences(13, 24), await appending);
        var view = await WaitForRetention(client, id, v => v.Archived is [{ } range] && range.ToSequence == covered);
        Assert.Equal((1L, covered, ContentBytes(1, covered)), (view.Archived[0].FromSequence, view.Archived[0].Messages, view.Archived[0].Bytes));
        Assert.Equal((covered + 1, 24L, ContentBytes(covered + 1, 24)), (view.Hot!.FromSequence, view.Hot.ToSequence, view.Hot.Bytes));
        await AssertAllMessages(client, id, 24);
        Assert.Equal(Sequences(1, covered), await ArchivedSequences(id));
    }

    [Fact]
    public async Task Two_retentions_planned_on_the_same_state_commit_once()
    {
        var tenant = RetentionTenants.Delete;
        using var client = app.Client(ModularChatApp.NewUser("twice"), tenant);
        var id = await ConversationWith(client, 12);
        await WaitForRetention(client, id, v => v.Deleted is [{ ToSequence: 7 }]);
        await Append(client, id, 13, 15); // the policy may go up to 10 now

        // Two nodes plan the same step without the lock; the second commits after the first.
        var executor = app.Host.Services.GetRequiredService<RetentionExecutor>();
        await using var first = Store.LightweightSession(tenant);
        await using var second = Store.LightweightSession(tenant);
        var firstPlan = await executor.PlanAsync(first, id, CancellationToken.None);
        var secondPlan = await executor.PlanAsync(second, id, CancellationToken.None);
        Assert.Equal((8L, 10L), (secondPlan!.Step.FromSequence, secondPlan.Step.ToSequence));

        var applied = (await executor.CommitAsync(first, firstPlan!, CancellationToken.None)).Applied;
        var stale = await executor.CommitAsync(second, secondPlan, CancellationToken.None);
        await second.SaveChangesAsync(); // as the handler's transaction would: the dropped plan must leave nothing to write

        Assert.Equal((8L, 10L, 3L, ContentBytes(8, 10)), (applied!.FromSequence, applied.ToSequence, applied.Messages, applied.Bytes));
        Assert.Equal(RetentionOutcome.Nothing, stale);
        var view = await (await client.GetAsync($"/api/conversations/{id}/retention")).ReadAs<RetentionViewDto>(HttpStatusCode.OK);
        Assert.Equal([(1L, 10L, 10L)], view.Deleted.Select(r => (r.FromSequence, r.ToSequence, r.Messages)));
        Assert.Equal((11L, 15L, ContentBytes(11, 15)), (view.Hot!.FromSequence, view.Hot.ToSequence, view.Hot.Bytes));
        Assert.Equal(2, await app.CountEvents(id, "retention_applied"));
        Assert.Equal(Sequences(11, 15), (await Messages(client, id, includeArchived: true)).Select(m => m.Sequence));
    }

    [Fact]
    public async Task A_context_cached_before_retention_holds_none_of_the_removed_messages_right_after_it_on_either_node()
    {
        var tenant = RetentionTenants.Delete;
        var user = ModularChatApp.NewUser("cached");
        await using var second = await app.StartHostAsync();
        using var client = app.Client(user, tenant);
        using var other = app.Client(second, user, tenant);
        var id = await ConversationWith(client, 12);
        await WaitForRetention(client, id, v => v.Deleted is [{ ToSequence: 7 }]);
        await Append(client, id, 13, 15); // the policy may go up to 10 now
        // The invalidation that follows the summary's revision has run: from here only retention changes the context.
        await Eventually.Until(() => app.PendingEnvelopesAbout([id]), n => n == 0, seconds: Eventually.BackgroundSeconds,
            what: "Work about the conversation still queued");

        // Node one builds the context and puts it in Redis, node two reads it from there; then each serves it from memory.
        using var lookups = new CacheLookupRecorder(app.Host, second);
        Assert.Equal(Sequences(8, 15), await ContextSequences(client, id));
        await Eventually.Until(() => ContextKeysInRedis(tenant, id), keys => keys > 0, seconds: 60, what: "The context never reached Redis");
        Assert.Equal(Sequences(8, 15), await ContextSequences(other, id));
        Assert.Equal(Sequences(8, 15), await ContextSequences(client, id));
        Assert.Equal(Sequences(8, 15), await ContextSequences(other, id));
        Assert.Equal(["miss", "hit", "hit", "hit"], lookups.Results("context"));

        // Retention deletes 8-10 on node one, as its handler runs it (a run that has to wait for the projections changes nothing).
        var executor = app.Host.Services.GetRequiredService<RetentionExecutor>();
        var outcome = await Eventually.Until(
            async () =>
            {
                await using var session = Store.LightweightSession(tenant);
                return await executor.ApplyAsync(session, id, CancellationToken.None);
            },
            o => !o.WaitsForProjections, seconds: Eventually.BackgroundSeconds, what: "Retention kept waiting for the projections");
        Assert.Equal((8L, 10L), (outcome.Applied!.FromSequence, outcome.Applied.ToSequence));

        // Right after it, neither node serves what it cached before.
        lookups.Clear();
        Assert.Equal(Sequences(11, 15), await ContextSequences(client, id));
        Assert.Equal(Sequences(11, 15), await ContextSequences(other, id));
        Assert.Equal("miss", lookups.Results("context")[0]);
    }

    /// <summary>The sequences of the messages in the conversation's context with room for all of them.</summary>
    private static async Task<List<long>> ContextSequences(HttpClient client, Guid id)
        => [.. (await (await client.GetAsync($"/api/conversations/{id}/context?maxTokens=100000")).ReadAs<ContextDto>(HttpStatusCode.OK)).Messages.Select(m => m.Sequence)];

    /// <summary>How many of the conversation's cached contexts (any generation and budget) are in Redis.</summary>
    private async Task<int> ContextKeysInRedis(string tenant, Guid conversationId)
    {
        var redis = app.Host.Services.GetRequiredService<StackExchange.Redis.IConnectionMultiplexer>();
        var found = 0;
        foreach (var endpoint in redis.GetEndPoints())
        {
            await foreach (var _ in redis.GetServer(endpoint).KeysAsync(pattern: $"modularchat:ctx:conv:{tenant}:{conversationId:N}:*"))
            {
                found++;
            }
        }

        return found;
    }

    [Fact]
    public async Task Keep_last_n_keeps_exactly_n_once_summarized()
    {
        using var client = app.Client(ModularChatApp.NewUser("keeper"), RetentionTenants.KeepLast);
        var id = await ConversationWith(client, 10);

        var view = await WaitForRetention(client, id, v => v.Deleted.Count > 0);
        Assert.Equal(3, view.Hot!.Messages);
        Assert.Equal(Enumerable.Range(8, 3).Select(i => (long)i), (await Messages(client, id, includeArchived: true)).Select(m => m.Sequence));
    }

    [Fact]
    public async Task A_message_never_summarized_is_never_removed()
    {
        var admin = app.Client(ModularChatApp.NewUser("admin"), RetentionTenants.Delete, "admin");
        using var client = app.Client(ModularChatApp.NewUser("short"), RetentionTenants.Delete);
        var id = await ConversationWith(client, 8); // below the first milestone: no summary

        // 8 messages over the 5 kept: the conversation is a candidate, so a run of retention is queued for it (before
        // the answer, in the inbox). Once nothing about it is pending, that run has happened and found nothing to remove.
        var queued = await (await admin.PostAsync("/api/admin/retention/apply", null)).ReadAs<JsonElement>(HttpStatusCode.Accepted);
        Assert.True(queued.GetProperty("conversations").GetInt32() >= 1, $"Nothing queued: {queued}");
        await Eventually.Until(() => app.PendingEnvelopesAbout([id]), n => n == 0, seconds: Eventually.BackgroundSeconds,
            what: "The retention run of the conversation never ran");

        var view = await (await client.GetAsync($"/api/conversations/{id}/retention")).ReadAs<RetentionViewDto>(HttpStatusCode.OK);
        Assert.Empty(view.Deleted);
        Assert.Equal((1L, 8L), (view.Hot!.FromSequence, view.Hot.ToSequence));
        Assert.Equal(8, (await Messages(client, id, includeArchived: false)).Count);
        admin.Dispose();
    }

    [Fact]
    public async Task Keep_all_is_the_default_and_removes_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await ConversationWith(client, 12);
        await client.WaitForSummary(id);
        // The revision's notice (queued in the revision's own transaction) is what would queue retention: once nothing
        // about the conversation is pending, it has been handled, and whatever it queued has run.
        await Eventually.Until(() => app.PendingEnvelopesAbout([id]), n => n == 0, seconds: Eventually.BackgroundSeconds,
            what: "The summary's notice was never handled");

        var view = await (await client.GetAsync($"/api/conversations/{id}/retention")).ReadAs<RetentionViewDto>(HttpStatusCode.OK);
        Assert.Equal("keep-all", view.Policy);
        Assert.Empty(view.Deleted);
        Assert.Empty(view.Archived);
        Assert.Equal(12, view.Hot!.Messages);
    }

    [Fact]
    public async Task Retention_totals_are_for_admins_and_count_what_retention_did()
    {
        // A tenant of its own, fresh for this run: the totals count exactly this conversation, whatever earlier runs left.
        var tenant = RetentionTenants.Totals;
        using var admin = app.Client(ModularChatApp.NewUser("admin"), tenant, "admin");
        using var user = app.Client(ModularChatApp.NewUser("user"), tenant);
        await (await user.GetAsync("/api/admin/retention")).ShouldBeProblem(403);
        var id = await ConversationWith(user, 12);
        await WaitForRetention(user, id, v => v.Deleted.Count > 0);

        var totals = await (await admin.GetAsync("/api/admin/retention")).ReadAs<JsonElement>(HttpStatusCode.OK);
        long Total(string name) => totals.GetProperty(name).GetInt64();
        Assert.Equal(("delete-after-summary", 5), (totals.GetProperty("policy").GetString(), totals.GetProperty("keepLast").GetInt32()));
        Assert.Equal((1L, 12L, 5L, 0L, 7L), (Total("conversations"), Total("messages"), Total("hotMessages"), Total("archivedMessages"), Total("deletedMessages")));
        Assert.Equal((ContentBytes(8, 12), 0L, ContentBytes(1, 7)), (Total("hotBytes"), Total("archivedBytes"), Total("deletedBytes")));
        Assert.Equal(Total("hotBytes") + Total("archivedBytes"), Total("bytesKept"));
    }

    /// <summary>
    /// A conversation of <paramref name="count"/> messages appended in one batch: the summary job and the retention after
    /// it see all of them. Appended one by one, a job that ran between two appends (a slow request on a busy machine)
    /// would see fewer, and retention would keep the last N of fewer messages.
    /// </summary>
    /// <param name="externalIds">Give message i the external id <c>ext-i</c>.</param>
    private static async Task<Guid> ConversationWith(HttpClient client, int count, bool externalIds = false)
    {
        var c = await (await client.PostJson("/api/conversations", new { title = "retention" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", Batch(count, externalIds))).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        return c.Id;
    }

    private static object Batch(int count, bool externalIds) => new
    {
        messages = Sequences(1, count).Select(i => new
        {
            role = i % 2 == 1 ? "user" : "assistant",
            content = Content(i),
            externalId = externalIds ? $"ext-{i}" : null,
        }),
    };

    /// <summary>
    /// A conversation of 12 messages under the archive policy (KeepLast 5) once retention archived 1-7, and the sequence
    /// its summary covers: 12, as the summary job saw the whole batch; no other summary is due before 25 messages.
    /// </summary>
    private static async Task<(Guid Id, long Covered)> ArchivedThroughSeven(HttpClient client)
    {
        var id = await ConversationWith(client, 12);
        await WaitForRetention(client, id, v => v.Archived is [{ ToSequence: 7 }]);
        return (id, await SummaryThrough(client, id));
    }

    /// <summary>Appends messages <paramref name="from"/> to <paramref name="to"/> one by one; returns the sequences they got.</summary>
    private static async Task<List<long>> Append(HttpClient client, Guid id, long from, long to)
    {
        var sequences = new List<long>();
        for (var i = from; i <= to; i++)
        {
            sequences.Add((await (await client.PostJson($"/api/conversations/{id}/messages", new { role = i % 2 == 1 ? "user" : "assistant", content = Content(i) }))
                .ReadAs<AppendResponseDto>(HttpStatusCode.Created)).Sequence);
        }

        return sequences;
    }

    private static string Content(long i) => $"Message number {i} of the conversation talks about topic {i * 7}.";

    private static long ContentBytes(long from, long to) => Sequences(from, to).Sum(i => (long)Encoding.UTF8.GetByteCount(Content(i)));

    private static List<long> Sequences(long from, long to) => [.. Enumerable.Range((int)from, (int)(to - from + 1)).Select(i => (long)i)];

    private static async Task<long> SummaryThrough(HttpClient client, Guid id)
        => (await (await client.GetAsync($"/api/conversations/{id}/summary")).ReadAs<JsonElement>(HttpStatusCode.OK)).GetProperty("toSequence").GetInt64();

    /// <summary>Every message from 1 to <paramref name="count"/>, hot or archived, exactly once, in order, with the content it was sent with.</summary>
    private static async Task AssertAllMessages(HttpClient client, Guid id, long count)
    {
        var all = await Messages(client, id, includeArchived: true);
        Assert.Equal(Sequences(1, count), all.Select(m => m.Sequence));
        Assert.All(all, m => Assert.Equal(Content(m.Sequence), m.Content));
    }

    private IDocumentStore Store => app.Host.Services.GetRequiredService<IDocumentStore>();

    private Task<List<long>> ArchivedSequences(Guid conversationId) => SequencesIn("modularchat.mt_doc_archivedmessage", conversationId);

    private static Task<RetentionViewDto> WaitForRetention(HttpClient client, Guid id, Func<RetentionViewDto, bool> done)
        => Eventually.Until(
            async () => await (await client.GetAsync($"/api/conversations/{id}/retention")).ReadAs<RetentionViewDto>(HttpStatusCode.OK),
            done, seconds: Eventually.BackgroundSeconds, what: "Retention did not happen");

    private static async Task<List<MessageDto>> Messages(HttpClient client, Guid id, bool includeArchived, string direction = "forward", int limit = 5)
    {
        var all = new List<MessageDto>();
        string? cursor = null;
        do
        {
            var url = $"/api/conversations/{id}/messages?includeArchived={includeArchived}&direction={direction}&limit={limit}" + (cursor is null ? "" : $"&cursor={cursor}");
            var page = await (await client.GetAsync(url)).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
            all.AddRange(page.Items);
            cursor = page.NextCursor;
        }
        while (cursor is not null);
        return all;
    }

    /// <summary>The sequences of the conversation's message entries in the search read model.</summary>
    private Task<List<long>> SearchEntrySequences(Guid conversationId) => SequencesIn("modularchat.mc_search_entries", conversationId, "and kind = 0");

    /// <summary>The <c>sequence</c> column of the conversation's rows in <paramref name="table"/>, ascending.</summary>
    private async Task<List<long>> SequencesIn(string table, Guid conversationId, string filter = "")
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"select sequence from {table} where conversation_id = @id {filter} order by sequence", connection);
        command.Parameters.AddWithValue("id", conversationId);
        var sequences = new List<long>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            sequences.Add(reader.GetInt64(0));
        }

        return sequences;
    }

    /// <summary>Rows of a table (or of every ModularChat table) whose text mentions both the conversation and <paramref name="text"/>.</summary>
    private async Task<long> CountRowsMentioning(string text, Guid conversationId, string? table = null)
        => (await RowsMentioning(text, conversationId, table)).Values.Sum();

    /// <summary>Per table, the rows whose text mentions both the conversation and <paramref name="text"/> (tables without any left out).</summary>
    private async Task<Dictionary<string, long>> RowsMentioning(string text, Guid conversationId, string? table = null)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        var tables = new List<string>();
        await using (var list = new NpgsqlCommand("select table_name from information_schema.tables where table_schema = 'modularchat' and table_type = 'BASE TABLE'", connection))
        await using (var reader = await list.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                tables.Add(reader.GetString(0));
            }
        }

        var counts = new Dictionary<string, long>();
        foreach (var name in tables.Where(t => table is null || t == table))
        {
            await using var command = new NpgsqlCommand(
                $"select count(*) from modularchat.\"{name}\" x where lower(x::text) like @text and x::text like @id", connection);
            command.Parameters.AddWithValue("text", "%" + text.ToLowerInvariant() + "%");
            command.Parameters.AddWithValue("id", "%" + conversationId + "%");
            if ((long)(await command.ExecuteScalarAsync())! is > 0 and var count)
            {
                counts[name] = count;
            }
        }

        return counts;
    }
}

internal sealed record MessageRangeDto(long FromSequence, long ToSequence, long Messages, long Bytes);

internal sealed record RetentionViewDto(Guid ConversationId, string Policy, int KeepLast, long MessageCount, MessageRangeDto? Hot,
    List<MessageRangeDto> Archived, List<MessageRangeDto> Deleted, long BytesKept);
