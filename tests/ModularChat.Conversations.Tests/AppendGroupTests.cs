using System.Net;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Microsoft.Extensions.Options;
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

        // Hold the first conversation's stream lock: each of the tenant's writers (Conversations:AppendGroupConcurrency)
        // takes an append to it and waits, so everything sent meanwhile queues.
        var writers = Settings.AppendGroupConcurrency;
        Assert.True(writers > 0, "group commit is off");
        await using var holder = await HoldStreamLock(blocked.Id);
        var waiting = new List<Task<HttpResponseMessage>>();
        for (var writer = 1; writer <= writers; writer++)
        {
            waiting.Add(client.PostJson($"/api/conversations/{blocked.Id}/messages", new { role = "user", content = $"held {writer}" }));
            await app.WaitForLockWaiters(writer);
        }

        // Sent one after the other, each once the one before is queued, so they queue in this order.
        var single = $"/api/conversations/{target.Id}/messages";
        var queued = new List<Task<HttpResponseMessage>>();
        foreach (var (url, body) in new (string, object)[]
                 {
                     (single, new { role = "user", content = "first", externalId = "e1" }),
                     ($"/api/conversations/{Guid.NewGuid()}/messages", new { role = "user", content = "to nowhere" }),
                     (single, new { role = "user", content = "stale", expectedVersion = 999 }),
                     ($"{single}/batch", new { messages = new[] { new { role = "user", content = "first", externalId = "e1" }, new { role = "assistant", content = "second", externalId = "e2" } } }),
                     (single, new { role = "assistant", content = "second, edited", externalId = "e2" }),
                 })
        {
            await Queue(user, queued, client.PostJson(url, body));
        }

        Assert.All(queued, t => Assert.False(t.IsCompleted)); // still queued behind the lock
        await holder.DisposeAsync();

        Assert.All(await Task.WhenAll(waiting), r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        var first = await (await queued[0]).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        await (await queued[1]).ShouldBeProblem(404);
        await (await queued[2]).ShouldBeProblem(409);
        var batch = await (await queued[3]).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        var edited = await (await queued[4]).ShouldBeProblem(409); // the id an earlier append of the group stored, other content
        Assert.Equal(("e2", 2), (edited.GetProperty("externalId").GetString(), edited.GetProperty("sequence").GetInt64()));

        Assert.Equal((1, "e1", false), (first.Sequence, first.ExternalId, first.Duplicate));
        Assert.Equal([(1L, "e1", true), (2L, "e2", false)], batch.Messages.Select(m => (m.Sequence, m.ExternalId!, m.Duplicate)));
        Assert.Equal(first.Id, batch.Messages[0].Id);
        Assert.Equal(target.Version + 2, batch.Version);

        // The two requests that stored something did so in one transaction.
        Assert.Single(await Transactions(target.Id));
        var page = await (await client.GetAsync($"/api/conversations/{target.Id}/messages")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal(["first", "second"], page.Items.Select(m => m.Content));
    }

    [Fact]
    public async Task After_a_group_of_several_appends_the_writer_waits_for_as_many_to_queue_and_writes_them_together()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var blocked = await client.NewConversation("held");
        var target = await client.NewConversation("cohort");

        // Long enough that only the fourth append can end the wait. The options are the host's own instance, read at
        // each wait; tests of a collection run one at a time.
        using var wait = WaitSetTo(TimeSpan.FromSeconds(30));
        var (holder, held) = await HoldAnAppend(client, blocked.Id);
        await using var _ = holder;
        var cohort = new List<Task<HttpResponseMessage>>();
        for (var i = 1; i <= 3; i++)
        {
            await Queue(user, cohort, client.PostJson($"/api/conversations/{target.Id}/messages", new { role = "user", content = $"turn {i}" }));
        }

        // The held append's group is answered; four appends were in flight during it, three are queued: the writer waits.
        await holder.DisposeAsync();
        await (await held).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        await Task.Delay(200);
        Assert.All(cohort, t => Assert.False(t.IsCompleted));

        cohort.Add(client.PostJson($"/api/conversations/{target.Id}/messages", new { role = "user", content = "turn 4" }));
        var answers = await Task.WhenAll(cohort).WaitAsync(TimeSpan.FromSeconds(20));

        foreach (var answer in answers)
        {
            await answer.ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        }

        Assert.Single(await Transactions(target.Id));
        var page = await (await client.GetAsync($"/api/conversations/{target.Id}/messages")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal(["turn 1", "turn 2", "turn 3", "turn 4"], page.Items.Select(m => m.Content));
    }

    [Fact]
    public async Task The_wait_for_appends_that_do_not_come_ends_after_the_configured_time_and_a_lone_client_never_waits()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var blocked = await client.NewConversation("held");
        var target = await client.NewConversation("late");

        // A group of two (the held append and one queued behind it) leaves the writer expecting two: only one comes.
        using (WaitSetTo(TimeSpan.FromMilliseconds(300)))
        {
            var (holder, held) = await HoldAnAppend(client, blocked.Id);
            await using var _ = holder;
            List<Task<HttpResponseMessage>> queued = [];
            await Queue(user, queued, client.PostJson($"/api/conversations/{target.Id}/messages", new { role = "user", content = "late" }));
            var late = queued[0];
            await holder.DisposeAsync();

            await (await held.WaitAsync(TimeSpan.FromSeconds(20))).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
            await (await late.WaitAsync(TimeSpan.FromSeconds(20))).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        }

        // One client, one append at a time: each group holds one append, so nothing is waited for, however long the wait.
        using (WaitSetTo(TimeSpan.FromMinutes(5)))
        {
            for (var i = 1; i <= 5; i++)
            {
                var answer = await client.PostJson($"/api/conversations/{target.Id}/messages", new { role = "user", content = $"alone {i}" })
                    .WaitAsync(TimeSpan.FromSeconds(30));
                await answer.ReadAs<AppendResponseDto>(HttpStatusCode.Created);
            }
        }
    }

    [Fact]
    public async Task The_writer_does_not_wait_for_more_appends_once_the_queue_holds_a_full_group_of_messages()
    {
        // A node whose writers wait on a clock that only the test moves: what is written before it moves did not wait.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var node = await app.StartHostAsync(services: s => s.AddSingleton(sp => ActivatorUtilities.CreateInstance<AppendGroups>(sp, (TimeProvider)clock)));
        var settings = node.Services.GetRequiredService<IOptions<ConversationsOptions>>().Value; // the node's own instance
        Assert.Equal(1, settings.AppendGroupConcurrency); // one writer per tenant: the one that waits
        settings.AppendGroupWait = TimeSpan.FromSeconds(5);
        var groups = node.Services.GetRequiredService<AppendGroups>();
        var user = ModularChatApp.NewUser();
        using var client = app.Client(node, user);
        var blocked = await client.NewConversation("held");
        var target = await client.NewConversation("batches");
        var maxMessages = settings.AppendGroupMaxMessages;
        const int perBatch = 50; // the suite's MaxBatchSize
        var batches = maxMessages / perBatch + 1; // one more than a group can take
        Assert.True(batches > 1);

        var (holder, held) = await HoldAnAppend(client, blocked.Id);
        await using var _ = holder;
        var queued = new List<Task<HttpResponseMessage>>();
        for (var b = 0; b < batches; b++)
        {
            var messages = Enumerable.Range(b * perBatch + 1, perBatch).Select(i => new { role = "user", content = $"line {i}" }).ToArray();
            await Queue(groups, user, queued, client.PostJson($"/api/conversations/{target.Id}/messages/batch", new { messages }));
        }

        // More appends were in flight than are queued, but the queue already holds more than one group's messages: the
        // writer goes on at once with as many batches as fit. The clock has not moved, so it cannot have waited.
        await holder.DisposeAsync();
        await (await held).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        var full = await Task.WhenAll(queued.Take(batches - 1)).WaitAsync(TimeSpan.FromSeconds(60));
        foreach (var answer in full)
        {
            await answer.ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        }

        // The last one did not fit: it waits for its group until the wait ends, which takes the clock moving.
        Assert.Equal(1, groups.QueuedFor(user));
        Assert.False(queued[^1].IsCompleted, "The batch that did not fit into the group was written without waiting for its own group");
        await Eventually.Until(() =>
        {
            clock.Advance(TimeSpan.FromSeconds(5));
            return Task.FromResult(queued[^1].IsCompleted);
        }, done => done, seconds: 60, what: "The last batch was not written once its group's wait had passed");
        await (await queued[^1]).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        var stored = await (await client.GetAsync($"/api/conversations/{target.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(batches * perBatch, stored.MessageCount);
        Assert.Equal(2, (await Transactions(target.Id)).Count);
    }

    [Fact]
    public async Task A_group_whose_save_fails_after_its_commit_is_answered_as_stored_and_not_written_again()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var blocked = await client.NewConversation("group");
        var target = await client.NewConversation("group");
        var (holder, held) = await HoldAnAppend(client, blocked.Id);
        var queued = new List<Task<HttpResponseMessage>>();
        for (var i = 1; i <= 3; i++)
        {
            // No external id: written a second time, each would be stored twice.
            await Queue(user, queued, client.PostJson($"/api/conversations/{target.Id}/messages", new { role = "user", content = $"message {i}" }));
        }

        var listeners = ((DocumentStore)app.Host.Services.GetRequiredService<IDocumentStore>()).Options.Listeners;
        var failing = new FailsAfterCommit(target.Id);
        listeners.Add(failing);
        try
        {
            await holder.DisposeAsync();
            (await held).EnsureSuccessStatusCode();
            var answers = await Task.WhenAll(queued);

            Assert.True(failing.Failed);
            Assert.All(answers, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        }
        finally
        {
            listeners.Remove(failing);
        }

        var stored = await (await client.GetAsync($"/api/conversations/{target.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(3, stored.MessageCount);
        Assert.Single(await Transactions(target.Id));
    }

    /// <summary>Fails, once, the save of the group that appends to <paramref name="conversationId"/>, after its commit (as the outbox's delivery may).</summary>
    private sealed class FailsAfterCommit(Guid conversationId) : DocumentSessionListenerBase
    {
        public bool Failed { get; private set; }

        public override Task AfterCommitAsync(IDocumentSession session, Marten.Services.IChangeSet commit, CancellationToken token)
        {
            if (!Failed && commit.GetEvents().Any(e => e.StreamId == conversationId && e.Data is ModularChat.Conversations.Contracts.MessageAppended))
            {
                Failed = true;
                throw new InvalidOperationException("The outbox's delivery failed after the commit (staged by a test).");
            }

            return Task.CompletedTask;
        }
    }

    /// <summary>The host's own options instance: what the append writers read.</summary>
    private ConversationsOptions Settings => app.Host.Services.GetRequiredService<IOptions<ConversationsOptions>>().Value;

    /// <summary>Sets <see cref="ConversationsOptions.AppendGroupWait"/> on the host until disposed.</summary>
    private IDisposable WaitSetTo(TimeSpan wait)
    {
        var settings = Settings;
        Assert.Equal(1, settings.AppendGroupConcurrency); // one writer per tenant: the one that waits
        var before = settings.AppendGroupWait;
        settings.AppendGroupWait = wait;
        return new Restore(() => settings.AppendGroupWait = before);
    }

    /// <summary>Holds <paramref name="conversationId"/>'s stream lock and sends an append to it, which the tenant's writer takes and waits with.</summary>
    private async Task<(StreamLock Lock, Task<HttpResponseMessage> Held)> HoldAnAppend(HttpClient client, Guid conversationId)
    {
        var holder = await HoldStreamLock(conversationId);
        var held = client.PostJson($"/api/conversations/{conversationId}/messages", new { role = "user", content = "held" });
        await app.WaitForLockWaiters(1);
        return (holder, held);
    }

    /// <summary>Adds <paramref name="request"/> to <paramref name="queued"/> once it waits in <paramref name="user"/>'s queue, so requests queue in the order sent.</summary>
    private Task Queue(string user, List<Task<HttpResponseMessage>> queued, Task<HttpResponseMessage> request)
        => Queue(app.Host.Services.GetRequiredService<AppendGroups>(), user, queued, request);

    /// <summary>As above, on the node whose append queues are <paramref name="groups"/>.</summary>
    private static async Task Queue(AppendGroups groups, string user, List<Task<HttpResponseMessage>> queued, Task<HttpResponseMessage> request)
    {
        queued.Add(request);
        await Eventually.Until(() => Task.FromResult(groups.QueuedFor(user)), n => n == queued.Count, seconds: 60);
    }

    /// <summary>Holds a conversation stream's row lock until disposed (rolled back).</summary>
    private async Task<StreamLock> HoldStreamLock(Guid streamId)
    {
        var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        var transaction = await connection.BeginTransactionAsync();
        await Execute(connection, "select 1 from modularchat.mt_streams where id = @id for update", streamId);
        return new StreamLock(connection, transaction);
    }

    private sealed class StreamLock(NpgsqlConnection connection, NpgsqlTransaction transaction) : IAsyncDisposable
    {
        private bool _released;

        public async ValueTask DisposeAsync()
        {
            if (_released)
            {
                return;
            }

            _released = true;
            await transaction.RollbackAsync();
            await connection.DisposeAsync();
        }
    }

    private sealed class Restore(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }

    private static async Task Execute(NpgsqlConnection connection, string sql, Guid id)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        command.Parameters.AddWithValue("id", id);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>The distinct transactions (xmin) that wrote the message events of a conversation.</summary>
    private async Task<List<string>> Transactions(Guid streamId)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "select distinct xmin::text from modularchat.mt_events where stream_id = @id and type = 'message_appended'", connection);
        command.Parameters.AddWithValue("id", streamId);
        return await command.ReadStringsAsync();
    }
}

/// <summary>
/// The idempotency lookup of appends (<see cref="MessagesByExternalId"/>): Npgsql prepares statements, so PostgreSQL
/// runs generic plans, and the lookup must probe the unique (tenant, conversation, external id) index once per id rather
/// than read the conversation's messages and compare each with every id.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class ExternalIdLookupTests(ConversationsApp app)
{
    [Fact]
    public async Task The_generic_plan_of_the_statement_run_per_external_id_is_one_probe_of_the_unique_index()
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        // The plan PostgreSQL caches for a prepared statement (PostgreSQL 15 has no EXPLAIN (GENERIC_PLAN)); the function
        // runs this very statement, and PL/pgSQL switches to the generic plan after a few calls, as prepared statements do.
        var probe = MessagesByExternalId.ProbeSql("modularchat");
        await using (var prepare = new NpgsqlCommand($"prepare lookup as {probe}; set plan_cache_mode = force_generic_plan", connection))
        {
            await prepare.ExecuteNonQueryAsync();
        }

        await using var explain = new NpgsqlCommand($"explain execute lookup('lookup-plan', '{Guid.NewGuid()}', 'ext-1')", connection);
        var plan = await explain.ReadStringsAsync();

        Assert.Contains(plan, line => line.Contains("ux_stored_message_external_id", StringComparison.Ordinal));
        Assert.Contains(plan, line => line.Contains("Index Cond", StringComparison.Ordinal) && line.Contains("external_id", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, line => line.Contains("Filter", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_probe_stays_on_the_unique_index_for_a_tenant_and_conversation_the_statistics_do_not_know_yet()
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        // A copy of the messages table (same columns and indexes) whose statistics are exactly these: one tenant with 16
        // conversations, analyzed before the newcomer's first message, and long external ids (within the default limit),
        // which make the unique index the largest of the table.
        await using var copy = await ScratchTables.CreateAsync(connection, "mt_doc_storedmessage");
        await connection.ExecuteAsync($"""
            insert into {copy.Schema}.mt_doc_storedmessage (tenant_id, id, data, conversation_id, sequence, external_id)
                select 'resident', gen_random_uuid(), jsonb_build_object(),
                       ('00000000-0000-0000-0000-0000000000' || lpad((g % 16)::text, 2, '0'))::uuid, g, repeat('x', 180) || g
                from generate_series(1, 40000) g;
            analyze {copy.Schema}.mt_doc_storedmessage;
            """);

        // As PL/pgSQL plans the first calls: with the values.
        var probe = MessagesByExternalId.ProbeSql(copy.Schema);
        var plan = await connection.ExplainAsync(probe, "newcomer", Guid.NewGuid(), "b-1");
        var visible = await connection.ExplainAsync(probe.Replace("(select $1::varchar)", "$1", StringComparison.Ordinal)
            .Replace("(select $2::uuid)", "$2", StringComparison.Ordinal), "newcomer", Guid.NewGuid(), "b-1");

        Assert.Contains(plan, line => line.Contains("Index Cond", StringComparison.Ordinal)
            && line.Contains("conversation_id = $1", StringComparison.Ordinal) && line.Contains("external_id", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, line => line.Contains("Filter", StringComparison.Ordinal));
        // With the tenant and the conversation visible, the same probe reads the conversation and filters it.
        Assert.Contains(visible, line => line.Contains("Filter: ((external_id)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_large_batch_finds_every_known_external_id_of_its_conversation_and_only_those()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var other = await client.NewConversation();
        static object[] Messages(int from, int to) =>
            [.. Enumerable.Range(from, to - from + 1).Select(i => new { role = "user", content = $"line {i}", externalId = $"x-{i}" })];
        var first = new List<AppendedDto>();
        for (var from = 1; from <= 150; from += 50) // the suite allows batches of 50
        {
            first.AddRange((await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = Messages(from, from + 49) }))
                .ReadAs<BatchResponseDto>(HttpStatusCode.Created)).Messages);
        }

        // The same ids in another conversation are other messages.
        await (await client.PostJson($"/api/conversations/{other.Id}/messages/batch", new { messages = Messages(151, 170) })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);

        // 30 known ids, then 20 new ones (which the other conversation holds).
        var retry = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = Messages(121, 170) })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);

        Assert.Equal(first.Skip(120).Select(m => (m.Id, m.Sequence, true)), retry.Messages.Take(30).Select(m => (m.Id, m.Sequence, m.Duplicate)));
        Assert.Equal(Enumerable.Range(151, 20).Select(i => ((long)i, $"x-{i}", false)), retry.Messages.Skip(30).Select(m => (m.Sequence, m.ExternalId!, m.Duplicate)));
        var stored = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(170, stored.MessageCount);
    }
}
