using System.Net;
using System.Text;
using System.Text.Json;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.BuildingBlocks.Persistence;
using Npgsql;
using StackExchange.Redis;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// Deleting a conversation removes everything derived from it: with every module of the Host at work on it first
/// (summary, retention, search entries and vectors, cached context), no row of any table of the database and no Redis
/// key mentions it afterwards.
/// </summary>
[Collection(RetentionCollection.Name)]
public sealed class DeletionCascadeTests(RetentionApp app)
{
    [Fact]
    public async Task Nothing_of_a_deleted_conversation_remains_in_any_table_or_in_redis()
    {
        using var client = app.Client(ModularChatApp.NewUser("cascade"), RetentionTenants.Archive);
        var conversation = await (await client.PostJson("/api/conversations", new { title = "to be deleted" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var id = conversation.Id;
        for (var i = 1; i <= 12; i++)
        {
            await (await client.PostJson($"/api/conversations/{id}/messages",
                new { role = i % 2 == 1 ? "user" : "assistant", content = $"Cascade message {i} mentions the aubergine festival.", externalId = $"cascade-{i}" }))
                .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        }

        // Everything derived exists first: a summary (and the archive retention made of what it covers, with the archived
        // messages' external ids), search entries with their vectors, and a cached context.
        await client.WaitForSummary(id);
        await WaitUntil(async () => (await RowsMentioning(id)).ContainsKey("mt_doc_archivedmessage"), "archived messages");
        Assert.Contains("mt_doc_retiredexternalid", (await RowsMentioning(id)).Keys);
        await Eventually.Until(async () =>
        {
            var search = await (await client.GetAsync($"/api/search?q=aubergine&conversationId={id}")).ReadAs<JsonElement>(HttpStatusCode.OK);
            return new { Hits = search.GetProperty("hits").GetArrayLength(), Tables = (await RowsMentioning(id)).Keys.ToList() };
        }, seen => seen.Hits > 0 && seen.Tables.Contains("mc_search_vectors"), seconds: Eventually.BackgroundSeconds, what: "No search entries and vectors");
        await (await client.GetAsync($"/api/conversations/{id}/context")).ReadAs<ContextDto>(HttpStatusCode.OK);
        var cached = await RedisKeysMentioning(id);
        Assert.NotEmpty(cached);
        await using (var redis = await ConnectionMultiplexer.ConnectAsync(app.RedisConnectionString))
        {
            // Nothing is kept in Redis for good, even for a conversation that is never deleted.
            foreach (var key in cached)
            {
                var ttl = await redis.GetDatabase().KeyTimeToLiveAsync(key);
                Assert.True(ttl is { } t && t <= TimeSpan.FromDays(1), $"{key} expires in {ttl?.ToString() ?? "never"}");
            }
        }

        var before = await RowsMentioning(id);
        Assert.True(before.Count >= 6, $"expected rows in many tables before the delete: {string.Join(", ", before.Keys)}");

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{id}")).StatusCode);
        await (await client.GetAsync($"/api/conversations/{id}")).ShouldBeProblem(404);

        // The rest goes in the background: purges, module cleanups, then the inbox's handled messages and the search
        // tombstone after their (here short) lifetimes.
        await Eventually.Until(() => RowsMentioning(id), left => left.Count == 0, seconds: Eventually.BackgroundSeconds, what: "Rows of the conversation are left");

        // In Redis only the two cache generations (context and summary) are left: counters, kept until they expire so that
        // an entry built just before the deletion and written after it is never read (CacheGenerationsTests).
        var left = await RedisKeysMentioning(id);
        Assert.Equal(2, left.Count);
        await using var redisAfter = await ConnectionMultiplexer.ConnectAsync(app.RedisConnectionString);
        foreach (var key in left)
        {
            Assert.StartsWith("modularchat:gen:", key, StringComparison.Ordinal);
            Assert.True(long.TryParse((string?)await redisAfter.GetDatabase().StringGetAsync(key), out _), $"{key} holds more than a counter");
            var ttl = await redisAfter.GetDatabase().KeyTimeToLiveAsync(key);
            Assert.True(ttl is { } t && t <= TimeSpan.FromDays(1), $"{key} expires in {ttl?.ToString() ?? "never"}");
        }
    }

    [Fact]
    public async Task A_deletion_whose_save_fails_after_its_commit_still_takes_the_conversation_out_of_the_caches()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var c = await (await client.PostJson("/api/conversations", new { title = "cached" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "Remember the blue door." }))
            .ReadAs<JsonElement>(HttpStatusCode.Created);
        await (await client.GetAsync($"/api/conversations/{c.Id}/context")).ReadAs<JsonElement>(HttpStatusCode.OK); // now cached

        // After the commit, Marten still runs the outbox's delivery and the listeners, with the request's token: a client
        // that leaves then, or any error there, fails the save of a deletion that is stored.
        var listeners = ((DocumentStore)app.Host.Services.GetRequiredService<IDocumentStore>()).Options.Listeners;
        var failing = new FailsAfterCommit(tenant);
        listeners.Add(failing);
        try
        {
            var deleted = await client.DeleteAsync($"/api/conversations/{c.Id}");
            Assert.False(deleted.IsSuccessStatusCode);
            Assert.True(failing.Failed);
        }
        finally
        {
            listeners.Remove(failing);
        }

        await (await client.GetAsync($"/api/conversations/{c.Id}")).ShouldBeProblem(404);
        await (await client.GetAsync($"/api/conversations/{c.Id}/context")).ShouldBeProblem(404);
    }

    /// <summary>Fails the first save of <paramref name="tenant"/> that stores a deletion, after its commit.</summary>
    private sealed class FailsAfterCommit(string tenant) : DocumentSessionListenerBase
    {
        public bool Failed { get; private set; }

        public override Task AfterCommitAsync(IDocumentSession session, Marten.Services.IChangeSet commit, CancellationToken token)
        {
            if (!Failed && session.TenantId == tenant && commit.GetEvents().Any(e => e.Data is ModularChat.Conversations.Contracts.ConversationDeleted))
            {
                Failed = true;
                throw new OperationCanceledException("The client left after the commit (staged by a test).");
            }

            return Task.CompletedTask;
        }
    }

    [Fact]
    public async Task Appends_and_reads_racing_the_deletion_answer_201_200_or_404_and_leave_nothing_behind()
    {
        using var client = app.Client(ModularChatApp.NewUser("race"));
        var id = (await (await client.PostJson("/api/conversations", new { title = "raced" })).ReadAs<ConversationDto>(HttpStatusCode.Created)).Id;
        var answers = new System.Collections.Concurrent.ConcurrentQueue<(string What, HttpStatusCode Status)>();
        using var deleted = new CancellationTokenSource();

        // Eight clients append singles and batches and read the context and the messages until, after the deletion,
        // their appends are refused.
        var racers = Enumerable.Range(0, 8).Select(n => Task.Run(async () =>
        {
            for (var i = 0; i < 200; i++)
            {
                var (what, response) = (i % 4) switch
                {
                    0 => ("append", await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = $"racer {n} turn {i}", externalId = $"r{n}-{i}" })),
                    1 => ("batch", await client.PostJson($"/api/conversations/{id}/messages/batch",
                        new { messages = Enumerable.Range(0, 5).Select(k => new { role = "assistant", content = $"racer {n} turn {i}.{k}" }) })),
                    2 => ("context", await client.GetAsync($"/api/conversations/{id}/context?maxTokens=300")),
                    _ => ("messages", await client.GetAsync($"/api/conversations/{id}/messages?limit=20&direction=backward")),
                };
                answers.Enqueue((what, response.StatusCode));
                response.Dispose();
                if (deleted.IsCancellationRequested && what is "append" or "batch" && response.StatusCode == HttpStatusCode.NotFound)
                {
                    return;
                }
            }
        })).ToList();
        await Eventually.Until(() => Task.FromResult(answers.Count), n => n >= 40, what: "The racers did not get going");

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{id}")).StatusCode);
        await deleted.CancelAsync();
        await Task.WhenAll(racers);

        var unexpected = answers.Where(a => a.Status is not (HttpStatusCode.OK or HttpStatusCode.Created or HttpStatusCode.NotFound)).ToList();
        Assert.True(unexpected.Count == 0, "Unexpected answers: " + string.Join(", ", unexpected.Take(10)));
        Assert.Contains(answers, a => a.What == "batch" && a.Status == HttpStatusCode.Created);
        Assert.Contains(answers, a => a.What is "append" or "batch" && a.Status == HttpStatusCode.NotFound);
        await (await client.GetAsync($"/api/conversations/{id}")).ShouldBeProblem(404);
        await Eventually.Until(() => RowsMentioning(id), left => left.Count == 0, seconds: Eventually.BackgroundSeconds, what: "Rows of the raced conversation are left");
    }

    [Fact]
    public async Task A_deleted_conversations_events_are_removed_only_behind_the_daemon_so_it_never_pauses_on_them()
    {
        using var client = app.Client(ModularChatApp.NewUser("purge"));
        var id = (await (await client.PostJson("/api/conversations", new { title = "purged" })).ReadAs<ConversationDto>(HttpStatusCode.Created)).Id;
        await (await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "soon gone" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        long before = 0;
        async Task<long> Scalar(string sql)
        {
            await using var command = new NpgsqlCommand(sql, connection);
            command.Parameters.AddWithValue("id", id);
            command.Parameters.AddWithValue("before", before);
            return await command.ExecuteScalarAsync() is long value ? value : 0;
        }

        // The daemon has read the conversation's events so far. A summary revision written just now (its own stream) and
        // the deletion add events it has not read yet.
        before = await Scalar("select max(seq_id) from modularchat.mt_events where stream_id = @id");
        await WaitUntil(async () => await Scalar("select last_seq_id from modularchat.mt_event_progression where name = 'HighWaterMark'") >= before,
            "high-water mark past the conversation's events");
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJson($"/api/conversations/{id}/summary", new { })).StatusCode);
        await client.WaitForSummary(id);
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{id}")).StatusCode);
        var after = await Scalar("select last_value from modularchat.mt_events_sequence");

        // The stream is removed, and the high-water mark passes the deletion's event without skipping it as a stuck gap
        // (removed above the mark, the daemon would pause every asynchronous projection on it for its stale-gap time).
        await WaitUntil(async () => await Scalar("select count(*) from modularchat.mt_events where stream_id = @id or (seq_id > @before and data::text like '%' || @id::text || '%')") == 0,
            "purge of the conversation's and its summary's streams");
        await WaitUntil(async () => await Scalar("select last_seq_id from modularchat.mt_event_progression where name = 'HighWaterMark'") >= after,
            "high-water mark past the deletion");
        Assert.Equal(0, await Scalar(
            $"select count(*) from modularchat.mt_high_water_skips where starting_sequence < {after} and ending_sequence > {before}"));
    }

    [Fact]
    public async Task A_deleted_conversations_stream_is_kept_until_search_indexing_has_read_it()
    {
        // Search indexing behind the daemon's high-water mark (it steps aside for append bursts): had the stream gone as soon
        // as the mark passed it, indexing would read the last appends (their search tombstone expired by then) and never the
        // deletion that takes them out again.
        var tenant = ModularChatApp.NewUser("lagging");
        using var client = app.Client(tenant);
        var id = (await (await client.PostJson("/api/conversations", new { title = "indexed late" })).ReadAs<ConversationDto>(HttpStatusCode.Created)).Id;
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        async Task<long> Scalar(string sql)
        {
            await using var command = new NpgsqlCommand(sql, connection);
            command.Parameters.AddWithValue("id", id);
            command.Parameters.AddWithValue("tenant", tenant);
            return await command.ExecuteScalarAsync() is long value ? value : 0;
        }

        // The tenant's search term lock, which every page of search indexing with the tenant's events takes first: held here,
        // indexing stops at the appends below (and the search clean-up of the deletion waits too).
        await Scalar("select count(pg_advisory_lock(hashtextextended('modularchat.mc_search_terms:' || @tenant, 0)))");
        try
        {
            await (await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "indexed after the deletion" }))
                .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
            Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{id}")).StatusCode);
            var last = await Scalar("select max(seq_id) from modularchat.mt_events where stream_id = @id");
            await WaitUntil(async () => await Scalar("select last_seq_id from modularchat.mt_event_progression where name = 'HighWaterMark'") >= last,
                "high-water mark past the deletion");

            // The purge looks again after 0.5 s, 1 s and 2 s: each time indexing has not read the stream, which stays.
            await Task.Delay(TimeSpan.FromSeconds(4));
            Assert.True(await Scalar("select count(*) from modularchat.mt_events where stream_id = @id") > 0, "The stream was purged before search indexing read it");
        }
        finally
        {
            await Scalar("select count(pg_advisory_unlock(hashtextextended('modularchat.mc_search_terms:' || @tenant, 0)))");
        }

        // Indexing reads the appends and the deletion, then the stream goes, and nothing of the conversation is left.
        await WaitUntil(async () => await Scalar("select count(*) from modularchat.mt_events where stream_id = @id") == 0, "purge of the conversation's stream");
        await Eventually.Until(() => RowsMentioning(id), left => left.Count == 0, seconds: Eventually.BackgroundSeconds, what: "Rows of the conversation are left");
    }

    [Fact]
    public async Task A_stream_is_removed_with_what_an_append_in_flight_commits_to_it_and_only_once_the_daemon_has_read_that()
    {
        using var client = app.Client(ModularChatApp.NewUser("inflight"));
        var id = (await (await client.PostJson("/api/conversations", new { title = "raced" })).ReadAs<ConversationDto>(HttpStatusCode.Created)).Id;
        Assert.Equal(HttpStatusCode.OK, (await client.PatchJson($"/api/conversations/{id}", new { title = "raced again" })).StatusCode);
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        async Task<long> Scalar(string sql, NpgsqlConnection? on = null)
        {
            await using var command = new NpgsqlCommand(sql, on ?? connection);
            command.Parameters.AddWithValue("id", id);
            return await command.ExecuteScalarAsync() is long value ? value : 0;
        }

        var before = await Scalar("select max(seq_id) from modularchat.mt_events where stream_id = @id");
        await WaitUntil(async () => await Scalar("select last_seq_id from modularchat.mt_event_progression where name = 'HighWaterMark'") >= before,
            "high-water mark past the conversation's events");
        string tenant;
        await using (var read = new NpgsqlCommand("select tenant_id from modularchat.mt_streams where id = @id", connection))
        {
            read.Parameters.AddWithValue("id", id);
            tenant = (string)(await read.ExecuteScalarAsync())!;
        }

        // An append in flight, as Marten's append function writes one: its event (a second rename) and the stream's new
        // version, not committed yet.
        await using var writer = new NpgsqlConnection(app.PostgresConnectionString);
        await writer.OpenAsync();
        var transaction = await writer.BeginTransactionAsync();
        var inFlight = await Scalar("""
            insert into modularchat.mt_events (seq_id, id, stream_id, version, data, type, timestamp, tenant_id, mt_dotnet_type)
            select nextval('modularchat.mt_events_sequence'), gen_random_uuid(), stream_id, version + 1, data, type, now(), tenant_id, mt_dotnet_type
            from modularchat.mt_events where stream_id = @id order by version desc limit 1
            returning seq_id
            """, writer);
        await Scalar("update modularchat.mt_streams set version = version + 1 where id = @id", writer);

        var store = app.Host.Services.GetRequiredService<IDocumentStore>();
        Task<StreamRemoval> Remove() => DaemonProgress.RemoveStreamAsync(store, tenant, id, DateTimeOffset.UtcNow, TimeSpan.FromMinutes(5), TimeProvider.System, CancellationToken.None);
        var removal = Task.Run(Remove);

        // The removal waits for the append (it reads the stream's last event only then)...
        await WaitUntil(async () => await Scalar(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%mt_streams%for update%'") > 0,
            "removal waiting for the append in flight");
        Assert.False(removal.IsCompleted);
        await transaction.CommitAsync();

        // ... so it counts the appended event, and removes nothing before the daemon has read it.
        var first = await removal;
        Assert.True(first.Found);
        Assert.Equal(inFlight, first.LastEvent);
        Assert.True(first.Wait || first.SlowestProjection >= inFlight, $"Removed with the slowest projection at {first.SlowestProjection}, below the appended event {inFlight}");
        if (first.Wait)
        {
            Assert.Equal(1, await Scalar("select count(*) from modularchat.mt_events where seq_id = " + inFlight));
        }

        var last = first;
        while (last.Wait)
        {
            await Task.Delay(200);
            last = await Remove();
        }

        Assert.False(last.Unread);
        Assert.Equal(0, await Scalar("select count(*) from modularchat.mt_events where stream_id = @id"));
        Assert.Equal(0, await Scalar("select count(*) from modularchat.mt_streams where id = @id"));
        Assert.False((await Remove()).Found);
        Assert.Equal(0, await Scalar($"select count(*) from modularchat.mt_high_water_skips where starting_sequence < {inFlight} and ending_sequence >= {inFlight}"));
    }

    private static Task WaitUntil(Func<Task<bool>> condition, string what)
        => Eventually.Until(condition, done => done, seconds: Eventually.BackgroundSeconds, what: $"No {what}");

    /// <summary>
    /// Per table of every schema of the test database, the rows that mention the conversation: in any column as text, or
    /// inside a binary column (message bodies of the Wolverine inbox and outbox are JSON stored as bytea).
    /// </summary>
    private async Task<Dictionary<string, long>> RowsMentioning(Guid id)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        var tables = new List<(string Schema, string Name)>();
        await using (var list = new NpgsqlCommand(
            "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')",
            connection))
        await using (var reader = await list.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                tables.Add((reader.GetString(0), reader.GetString(1)));
            }
        }

        Assert.Contains(tables, t => t.Name == "mt_events");
        var text = id.ToString();
        var hex = Convert.ToHexStringLower(Encoding.UTF8.GetBytes(text));
        var counts = new Dictionary<string, long>();
        foreach (var (schema, name) in tables)
        {
            await using var command = new NpgsqlCommand(
                $"select count(*) from \"{schema}\".\"{name}\" x where x::text like @text or x::text like @hex or replace(x::text, '-', '') like @compact", connection);
            command.Parameters.AddWithValue("text", $"%{text}%");
            command.Parameters.AddWithValue("hex", $"%{hex}%");
            command.Parameters.AddWithValue("compact", $"%{id:N}%");
            if ((long)(await command.ExecuteScalarAsync())! is > 0 and var count)
            {
                counts[name] = count;
            }
        }

        return counts;
    }

    private async Task<List<string>> RedisKeysMentioning(Guid id)
    {
        await using var redis = await ConnectionMultiplexer.ConnectAsync(app.RedisConnectionString);
        var keys = new List<string>();
        foreach (var endpoint in redis.GetEndPoints())
        {
            var server = redis.GetServer(endpoint);
            foreach (var pattern in new[] { $"*{id}*", $"*{id:N}*" })
            {
                await foreach (var key in server.KeysAsync(pattern: pattern))
                {
                    keys.Add(key.ToString());
                }
            }
        }

        return keys;
    }
}
