using System.Net;
using System.Net.Http.Headers;
using Alba;
using ModularChat.BuildingBlocks.Messaging;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// A node whose PostgreSQL goes away (a relay in front of the real server is cut): requests answer 503 with Retry-After
/// instead of 500 and the node reports itself not ready (but live, so it is not restarted for it); once the database is
/// back the node serves again with nothing lost or doubled.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class DatabaseOutageTests(ConversationsApp app)
{
    [Fact]
    public async Task While_the_database_is_unreachable_requests_answer_503_with_retry_after_and_the_node_recovers_when_it_is_back()
    {
        await using var proxy = PostgresProxy();
        await using var node = await StartNodeAsync(proxy);
        using var client = Client(node, "outage");
        var conversation = await (await client.PostJson("/api/conversations", new { title = "outage" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var messages = $"/api/conversations/{conversation.Id}/messages";
        await (await client.PostJson(messages, new { role = "user", content = "before the outage", externalId = "m1" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        proxy.Cut();

        var append = await client.PostJson(messages, new { role = "user", content = "during the outage", externalId = "m2" });
        var problem = await append.ShouldBeProblem(503);
        Assert.Contains("database", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(5), append.Headers.RetryAfter?.Delta);
        await (await client.GetAsync("/api/conversations")).ShouldBeProblem(503);
        await (await client.GetAsync(messages)).ShouldBeProblem(503);
        using var anonymous = node.Server.CreateClient();
        var ready = await anonymous.GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        var readiness = await ready.Content.ReadAsStringAsync();
        Assert.DoesNotContain(proxy.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), readiness, StringComparison.Ordinal);
        Assert.Contains("PostgreSQL is unreachable", readiness, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/live")).StatusCode);

        proxy.Restore();

        // A client retrying the refused append (same externalId) gets it stored once the database answers again.
        var status = await Eventually.Until(
            async () => (await client.PostJson(messages, new { role = "user", content = "during the outage", externalId = "m2" })).StatusCode,
            code => code != HttpStatusCode.ServiceUnavailable, seconds: 30, what: "The node still answers 503");
        Assert.Equal(HttpStatusCode.Created, status);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/ready")).StatusCode);
        var page = await (await client.GetAsync(messages)).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal([(1L, "m1"), (2L, "m2")], page.Items.Select(m => (m.Sequence, m.ExternalId)));
    }

    [Fact]
    public async Task A_database_that_does_not_answer_in_time_gives_503_saying_so_and_the_retry_is_stored_once()
    {
        // A node whose commands time out after 3 s (long enough for its start on a busy machine), and a conversation whose stream lock another session holds.
        var shortTimeout = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString) { CommandTimeout = 3 };
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["ConnectionStrings:Postgres"] = shortTimeout.ConnectionString });
        using var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser("slow")));
        var conversation = await (await client.PostJson("/api/conversations", new { title = "slow" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var messages = $"/api/conversations/{conversation.Id}/messages";
        await using var holder = new NpgsqlConnection(app.PostgresConnectionString);
        await holder.OpenAsync();
        await using var lockTransaction = await holder.BeginTransactionAsync();
        await using (var lockStream = new NpgsqlCommand("select 1 from modularchat.mt_streams where id = @id for update", holder))
        {
            lockStream.Parameters.AddWithValue("id", conversation.Id);
            await lockStream.ExecuteNonQueryAsync();
        }

        var append = await client.PostJson(messages, new { role = "user", content = "while locked", externalId = "m1" });

        var problem = await append.ShouldBeProblem(503);
        Assert.Contains("did not answer in time", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(5), append.Headers.RetryAfter?.Delta);

        await lockTransaction.RollbackAsync();
        var retried = await (await client.PostJson(messages, new { role = "user", content = "while locked", externalId = "m1" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        Assert.Equal(1, retried.Sequence);
        var page = await (await client.GetAsync(messages)).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal([(1L, "m1")], page.Items.Select(m => (m.Sequence, m.ExternalId)));
    }

    [Fact]
    public async Task A_notice_whose_handler_meets_the_database_away_waits_for_it_and_is_handled_once_it_is_back()
    {
        await using var proxy = PostgresProxy();
        // Failures while the database answers are bounded; those while it is away (three here) must not count.
        await using var node = await StartNodeAsync(proxy, new() { ["Messaging:MaxAttemptsWhileDatabaseAnswers"] = "3" });
        using var client = Client(node, "away");
        var conversation = await (await client.PostJson("/api/conversations", new { title = "away" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var messages = $"/api/conversations/{conversation.Id}/messages";
        await (await client.PostJson(messages, new { role = "user", content = "first" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        await using var direct = new NpgsqlConnection(app.PostgresConnectionString);
        await direct.OpenAsync();
        await using var observer = new NpgsqlConnection(app.PostgresConnectionString); // outside the holding transaction: pg_stat_activity is read once per transaction
        await observer.OpenAsync();
        Task<long> Scalar(string sql, NpgsqlConnection? on = null) => ScalarAbout(conversation.Id, sql, on ?? observer);

        // Summaries follows the appends through their notices: the conversation's activity counts the first message.
        await Eventually.Until(() => Scalar(CountedSql), n => n == 1, seconds: Eventually.BackgroundSeconds, what: "The first notice was not handled");

        // The next notice's handler waits on that row (another session holds it) when the database goes away.
        var holding = await direct.BeginTransactionAsync();
        await Scalar(LockActivitySql, direct);
        await (await client.PostJson(messages, new { role = "user", content = "second" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        await Eventually.Until(
            () => Scalar("select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%conversationactivity%' and pid <> pg_backend_pid()"),
            n => n > 0, seconds: Eventually.BackgroundSeconds, what: "The second notice's handler did not reach the held row");
        proxy.Cut();
        await holding.RollbackAsync();
        // Longer than Wolverine's default took to give up (three attempts at once).
        await Task.Delay(TimeSpan.FromSeconds(3));
        proxy.Restore();

        // The notice was tried again once the database was back: nothing went to the dead-letter store.
        await Eventually.Until(() => Scalar(CountedSql), n => n == 2, seconds: Eventually.BackgroundSeconds, what: "The second notice was lost");
        Assert.Equal(0, await Scalar(DeadLetteredSql));
    }

    [Fact]
    public async Task A_notice_that_keeps_timing_out_while_the_database_answers_goes_to_the_dead_letter_store_and_can_be_replayed()
    {
        await using var node = await StartImpatientNodeAsync();
        using var client = Client(node, "stuck");
        var conversation = await (await client.PostJson("/api/conversations", new { title = "stuck" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var messages = $"/api/conversations/{conversation.Id}/messages";
        await (await client.PostJson(messages, new { role = "user", content = "first" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        await using var observer = new NpgsqlConnection(app.PostgresConnectionString);
        await observer.OpenAsync();
        await using var holder = new NpgsqlConnection(app.PostgresConnectionString);
        await holder.OpenAsync();
        Task<long> Scalar(string sql, NpgsqlConnection? on = null) => ScalarAbout(conversation.Id, sql, on ?? observer);

        await Eventually.Until(() => Scalar(CountedSql), n => n == 1, seconds: Eventually.BackgroundSeconds, what: "The first notice was not handled");

        // The activity row stays locked by another session: every attempt of the next notice's handler times out.
        var holding = await holder.BeginTransactionAsync();
        await Scalar(LockActivitySql, holder);
        await (await client.PostJson(messages, new { role = "user", content = "second" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        // Two timeouts (3 s each, 0.25 s apart) while the database answers: the notice is dead-lettered, not tried forever.
        await Eventually.Until(() => Scalar(DeadLetteredSql), n => n == 1, seconds: Eventually.BackgroundSeconds, what: "The stuck notice was not dead-lettered");
        await holding.RollbackAsync();
        Assert.Equal(1, await Scalar(CountedSql));

        // Replayed (as an operator would) once the lock is gone: the notice is handled and counts the second message.
        await Scalar("update modularchat.wolverine_dead_letters set replayable = true where encode(body, 'escape') like '%' || @id::text || '%'");
        await Eventually.Until(() => Scalar(CountedSql), n => n == 2, seconds: Eventually.BackgroundSeconds, what: "The replayed notice was not handled");
        Assert.Equal(0, await Scalar(DeadLetteredSql));
    }

    [Fact]
    public async Task A_message_handled_on_its_own_is_dead_lettered_without_its_failure_count_so_a_replay_counts_afresh()
    {
        // As above, with a message Wolverine hands over alone, not in a batch: Summaries' clean-up after a deletion, which
        // deletes the conversation's activity row. The count of failures travels in the message's headers, which are
        // stored with it in the dead-letter store.
        await using var node = await StartImpatientNodeAsync();
        using var client = Client(node, "stuck-cleanup");
        var conversation = await (await client.PostJson("/api/conversations", new { title = "stuck" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await (await client.PostJson($"/api/conversations/{conversation.Id}/messages", new { role = "user", content = "first" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        await using var observer = new NpgsqlConnection(app.PostgresConnectionString);
        await observer.OpenAsync();
        await using var holder = new NpgsqlConnection(app.PostgresConnectionString);
        await holder.OpenAsync();
        Task<long> Scalar(string sql, NpgsqlConnection? on = null) => ScalarAbout(conversation.Id, sql, on ?? observer);
        await Eventually.Until(() => Scalar(CountedSql), n => n == 1, seconds: Eventually.BackgroundSeconds, what: "The notice was not handled");
        // The check Summaries sends after its first write for a conversation would delete the row too, once the
        // conversation is gone: it must be done before the row is held.
        await Eventually.Until(() => Scalar(PendingSql), n => n == 0, seconds: Eventually.BackgroundSeconds, what: "Messages about the conversation still queued");

        var holding = await holder.BeginTransactionAsync();
        await Scalar(LockActivitySql, holder);
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{conversation.Id}")).StatusCode);
        const string CleanUpDeadLetteredSql = DeadLetteredSql + " and message_type like '%ConversationDeleted'";
        await Eventually.Until(() => Scalar(CleanUpDeadLetteredSql), n => n == 1, seconds: Eventually.BackgroundSeconds, what: "The stuck clean-up was not dead-lettered");
        Assert.Equal(0, await Scalar(CleanUpDeadLetteredSql + $" and encode(body, 'escape') like '%{DatabaseOutages.FailuresWhileUpHeader}%'"));

        // Replayed while the row is still held: its first failure counts as the first, so it is tried again (not
        // dead-lettered at once, as with its stored count of 2), and handled once the row is let go.
        await Scalar("update modularchat.wolverine_dead_letters set replayable = true where encode(body, 'escape') like '%' || @id::text || '%'");
        await Eventually.Until(() => Scalar(CleanUpDeadLetteredSql), n => n == 0, seconds: Eventually.BackgroundSeconds, what: "The dead letter was not replayed");
        await Eventually.Until(() => Scalar(WaitingOnTheLockSql), n => n > 0, seconds: Eventually.BackgroundSeconds, what: "The replayed clean-up did not run");
        await Eventually.Until(() => Scalar(WaitingOnTheLockSql), n => n == 0, seconds: 10, what: "The replayed clean-up's first attempt did not time out");
        await holding.RollbackAsync();
        await Eventually.Until(() => Scalar(CountedSql), n => n == 0, seconds: Eventually.BackgroundSeconds, what: "The replayed clean-up did not remove the activity");
        Assert.Equal(0, await Scalar(DeadLetteredSql));
    }

    /// <summary>Messages about the conversation not yet handled (queued, running or scheduled).</summary>
    private const string PendingSql =
        "select count(*) from modularchat.wolverine_incoming_envelopes where status <> 'Handled' and encode(body, 'escape') like '%' || @id::text || '%'";

    /// <summary>Sessions waiting for a lock on a row of the activity table (the clean-up's delete behind the held row).</summary>
    private const string WaitingOnTheLockSql =
        "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%mt_doc_conversationactivity%' and @id is not null";

    /// <summary>How many messages of the conversation <c>@id</c> Summaries' activity counts (its notices handled).</summary>
    private const string CountedSql = "select (data->>'LastSequence')::bigint from modularchat.mt_doc_conversationactivity where id = @id";

    /// <summary>Holds the conversation's activity row (in the caller's transaction), where a notice's handler waits.</summary>
    private const string LockActivitySql = "select 1 from modularchat.mt_doc_conversationactivity where id = @id for update";

    /// <summary>Dead-lettered messages about the conversation.</summary>
    private const string DeadLetteredSql = "select count(*) from modularchat.wolverine_dead_letters where encode(body, 'escape') like '%' || @id::text || '%'";

    /// <summary>The bigint <paramref name="sql"/> returns on <paramref name="connection"/> with <c>@id</c> = <paramref name="conversationId"/> (0 for none).</summary>
    private static async Task<long> ScalarAbout(Guid conversationId, string sql, NpgsqlConnection connection)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        command.Parameters.AddWithValue("id", conversationId);
        return await command.ExecuteScalarAsync() is long value ? value : 0;
    }

    /// <summary>A node of its own whose commands time out after 3 s and whose messages may fail twice while the database answers.</summary>
    private Task<IAlbaHost> StartImpatientNodeAsync()
    {
        var shortTimeout = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString) { CommandTimeout = 3 };
        return app.StartHostAsync(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Postgres"] = shortTimeout.ConnectionString,
            ["Messaging:MaxAttemptsWhileDatabaseAnswers"] = "2",
        });
    }

    /// <summary>A relay in front of the test database, to take it away from a node and give it back.</summary>
    private TcpProxy PostgresProxy()
    {
        var database = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString);
        return new TcpProxy(database.Host!, database.Port);
    }

    /// <summary>A node of its own that reaches PostgreSQL through <paramref name="proxy"/>.</summary>
    private Task<IAlbaHost> StartNodeAsync(TcpProxy proxy, Dictionary<string, string?>? settings = null)
    {
        var throughProxy = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString) { Host = "127.0.0.1", Port = proxy.Port };
        return app.StartHostAsync(new Dictionary<string, string?>(settings ?? []) { ["ConnectionStrings:Postgres"] = throughProxy.ConnectionString });
    }

    private HttpClient Client(IAlbaHost node, string user)
    {
        var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser(user)));
        return client;
    }
}
