using System.Net;
using System.Net.Http.Headers;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Search.Projection;
using ModularChat.Search.Storage;
using ModularChat.Search.Vectors;
using Npgsql;
using Wolverine.Runtime;
using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>Several nodes share one PostgreSQL: each keeps its own in-memory vectors, refreshed from the database.</summary>
[Collection(AppCollection.Name)]
public sealed class ClusterTests(SearchApp app)
{
    [Fact]
    public async Task Another_node_finds_new_messages_and_forgets_deleted_ones()
    {
        var user = ModularChatApp.NewUser();
        using var nodeA = app.Client(user);
        // A second node of the same deployment that only serves searches here (no projections, no embedding worker of its own).
        await using var second = await app.StartSearchOnlyNodeAsync();
        using var nodeB = second.Server.CreateClient();
        nodeB.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));

        var first = await nodeA.StartConversation("one", Message("the lighthouse keeper's diary"));
        await nodeA.WaitForIndexing(1);
        Assert.Single((await (await nodeB.GetAsync("/api/search?q=lighthouse&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits);

        var secondConversation = await nodeA.StartConversation("two", Message("a lighthouse on the cliff"));
        await nodeA.WaitForIndexing(2);
        var hits = await Eventually.Until(
            async () => (await (await nodeB.GetAsync("/api/search?q=lighthouse&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits,
            h => h.Count == 2);
        Assert.Equal(2, hits.Count);

        (await nodeA.DeleteAsync($"/api/conversations/{first}")).EnsureSuccessStatusCode();
        hits = await Eventually.Until(
            async () => (await (await nodeB.GetAsync("/api/search?q=lighthouse&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits,
            h => h.Count == 1);
        Assert.Equal([secondConversation], hits.Select(h => h.ConversationId));
    }

    [Fact]
    public async Task A_node_that_does_not_run_the_search_projection_refuses_to_rebuild_it()
    {
        await using var second = await app.StartSearchOnlyNodeAsync();
        using var admin = second.Server.CreateClient();
        admin.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser("operator"), null, "operator"));

        var before = await RebuildStatus(admin);

        var problem = await (await admin.PostAsync("/api/admin/search/rebuild", null)).ShouldBeProblem(409);

        Assert.Contains("does not run the search projection", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(before, await RebuildStatus(admin));
    }

    [Fact]
    public async Task A_rebuild_of_more_events_than_the_online_limit_is_refused_before_anything_is_emptied()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        await client.StartConversation("kept", Message("the ferry timetable for Sunday"));
        await client.WaitForIndexing(1);
        await using var node = await app.StartSearchOnlyNodeAsync(new Dictionary<string, string?> { ["Search:MaxOnlineRebuildEvents"] = "1" });
        using var admin = node.Server.CreateClient();
        admin.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser("operator"), null, "operator"));

        var before = await RebuildStatus(admin);

        var problem = await (await admin.PostAsync("/api/admin/search/rebuild", null)).ShouldBeProblem(409);

        Assert.Contains("Search:MaxOnlineRebuildEvents", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Contains("--shard-timeout", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.True(problem.GetProperty("events").GetInt64() > 1);
        Assert.Equal(1, problem.GetProperty("maxOnlineRebuildEvents").GetInt64());
        Assert.Equal(before, await RebuildStatus(admin));
        Assert.Single((await (await client.GetAsync("/api/search?q=ferry")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits);
    }

    [Fact]
    public async Task A_rebuild_whose_node_stopped_is_reported_failed_on_every_node_and_another_may_start()
    {
        // A rebuild recorded as running on a node that has not been heard from for an hour (killed mid-rebuild).
        var killed = Guid.NewGuid();
        await WriteRebuildRow(killed, "now() - interval '1 hour'");
        await using var second = await app.StartSearchOnlyNodeAsync();
        using var other = Operator(second.Server.CreateClient());
        using var admin = Operator(app.Host.Server.CreateClient());

        var reported = await RebuildStatus(other);
        Assert.Equal(("failed", killed), (reported.State, reported.Node));
        Assert.Contains("stopped before it finished", reported.Error, StringComparison.Ordinal);

        var started = await (await admin.PostAsync("/api/admin/search/rebuild", null)).ReadAs<RebuildStatusDto>(HttpStatusCode.Accepted);
        Assert.Equal(("running", MainNode), (started.State, started.Node));
        var finished = await Eventually.Until(() => RebuildStatus(admin), s => s.State != "running", seconds: 120);
        Assert.Equal(("succeeded", started.StartedAt), (finished.State, finished.StartedAt));
        // The node that did not run it reports the same rebuild.
        Assert.Equal(finished, await RebuildStatus(other));
    }

    [Fact]
    public async Task A_running_rebuild_refreshes_its_heartbeat_so_that_no_node_takes_it_for_cut_off()
    {
        using var admin = Operator(app.Host.Server.CreateClient());
        // The rebuild's clean-up deletes orphan vectors: while the test holds the table, the rebuild cannot finish.
        await using var connection = await app.OpenConnectionAsync();
        await using var transaction = await LockVectorsAsync(connection);

        var started = await (await admin.PostAsync("/api/admin/search/rebuild", null)).ReadAs<RebuildStatusDto>(HttpStatusCode.Accepted);
        var first = await Heartbeat();
        // Refreshed at the node's health-check interval (Messaging:HealthCheckInterval), while the rebuild is still held up.
        await Eventually.Until(Heartbeat, beat => beat > first, seconds: 60);
        var meanwhile = await RebuildStatus(admin);
        await transaction.RollbackAsync();

        Assert.Equal(("running", started.StartedAt, MainNode), (meanwhile.State, meanwhile.StartedAt, meanwhile.Node));
        var finished = await Eventually.Until(() => RebuildStatus(admin), s => s.State != "running", seconds: 120);
        Assert.Equal(("succeeded", started.StartedAt), (finished.State, finished.StartedAt));
    }

    [Fact]
    public async Task A_rebuild_taken_over_by_another_stops_instead_of_running_beside_it()
    {
        using var admin = Operator(app.Host.Server.CreateClient());
        // As in the heartbeat test, the test holds the vectors' table: the rebuild waits in its clean-up.
        await using var connection = await app.OpenConnectionAsync();
        await using var transaction = await LockVectorsAsync(connection);

        var elsewhere = Guid.NewGuid();
        try
        {
            await (await admin.PostAsync("/api/admin/search/rebuild", null)).ReadAs<RebuildStatusDto>(HttpStatusCode.Accepted);
            Assert.Equal(1, await Eventually.Until(CleanUpsWaiting, n => n == 1, seconds: 120));

            // Another node took this one for cut off (its database was out of reach for longer than the stale timeout) and
            // started its own: at its next heartbeat this rebuild finds the row taken and stops, lock or not.
            var other = await WriteRebuildRow(elsewhere, "now()");

            Assert.Equal(0, await Eventually.Until(CleanUpsWaiting, n => n == 0, seconds: 60));
            var status = await RebuildStatus(admin);
            Assert.Equal(("running", elsewhere), (status.State, status.Node));
            await using var command = new NpgsqlCommand($"select run_id from {Rebuilds} where id = 1", connection, transaction);
            Assert.Equal(other, await command.ExecuteScalarAsync());
        }
        finally
        {
            await transaction.RollbackAsync();
            await WriteRebuildRow(elsewhere, "now() - interval '1 hour'"); // cut off: the next rebuild may start
        }
    }

    [Fact]
    public async Task A_rebuild_running_on_another_node_is_reported_and_not_started_a_second_time()
    {
        var elsewhere = Guid.NewGuid();
        var run = await WriteRebuildRow(elsewhere, "now()");
        try
        {
            using var admin = Operator(app.Host.Server.CreateClient());

            var answer = await (await admin.PostAsync("/api/admin/search/rebuild", null)).ReadAs<RebuildStatusDto>(HttpStatusCode.Accepted);

            Assert.Equal(("running", elsewhere), (answer.State, answer.Node));
            Assert.Equal(answer, await RebuildStatus(admin));
            await using var connection = await app.OpenConnectionAsync();
            await using var command = new NpgsqlCommand($"select run_id from {Rebuilds} where id = 1", connection);
            Assert.Equal(run, await command.ExecuteScalarAsync());
        }
        finally
        {
            await WriteRebuildRow(elsewhere, "now() - interval '1 hour'"); // cut off: the next rebuild may start
        }
    }

    [Fact]
    public async Task Another_node_forgets_the_vectors_of_messages_retention_deleted()
    {
        var user = ModularChatApp.NewUser();
        using var nodeA = app.Client(user);
        await using var second = await app.StartSearchOnlyNodeAsync();
        using var nodeB = second.Server.CreateClient();
        nodeB.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));
        var conversation = await nodeA.StartConversation("harbour",
            Message("the harbour master's logbook"), Message("ships leave the harbour at dawn", "assistant"),
            Message("the harbour wall needs repair"), Message("harbour fees went up", "assistant"));
        var model = (await nodeA.WaitForIndexing(4)).Model;
        var index = second.Services.GetRequiredService<IVectorIndex>();
        Assert.Equal(4, await index.CountAsync(user, model, CancellationToken.None)); // node B holds all four in memory

        // What retention's delete does to the read model (SearchCleanupHandler and the projection run exactly this).
        var store = app.Host.Services.GetRequiredService<IDocumentStore>();
        await using (var session = store.LightweightSession(user))
        {
            new SearchRemovals(new SearchSchema(store.Options.DatabaseSchemaName)).Messages(session, conversation, 1, 2);
            await session.SaveChangesAsync();
        }

        Assert.Equal(2, await Eventually.Until(() => index.CountAsync(user, model, CancellationToken.None), n => n == 2));
        var hits = (await (await nodeB.GetAsync("/api/search?q=harbour&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
        Assert.Equal([3L, 4L], hits.Select(h => h.Sequence!.Value).Order());
    }

    [Fact]
    public async Task A_node_that_did_not_search_for_longer_than_the_tombstones_live_forgets_what_was_deleted_meanwhile()
    {
        var user = ModularChatApp.NewUser();
        using var nodeA = app.Client(user);
        // Tombstones (deleted conversations) and removed ranges live 2 s on this node, idle vector sets 1 s.
        await using var second = await app.StartSearchOnlyNodeAsync(new Dictionary<string, string?>
        {
            ["Search:TombstoneLifetime"] = "00:00:02",
            ["Search:VectorIndex:IdleEviction"] = "00:00:01",
        });
        var kept = await nodeA.StartConversation("kept", Message("the lighthouse keeper's diary"));
        var gone = await nodeA.StartConversation("gone", Message("a lighthouse on the cliff"), Message("the lighthouse lamp was lit", "assistant"));
        var model = (await nodeA.WaitForIndexing(3)).Model;
        var index = second.Services.GetRequiredService<IVectorIndex>();
        Assert.Equal(3, await index.CountAsync(user, model, CancellationToken.None));

        // Deleted while node B searches nothing for this tenant, nor for any other (so nothing evicts its set), until the
        // tombstone is gone.
        (await nodeA.DeleteAsync($"/api/conversations/{gone}")).EnsureSuccessStatusCode();
        await Eventually.Until(async () => (await nodeA.SearchStatus()).Entries, n => n == 1);
        await Eventually.Until(async () => await TombstonesOf(gone), n => n == 0, what: "The tombstone was not removed");

        Assert.Equal(1, await index.CountAsync(user, model, CancellationToken.None));
        var hits = (await (await second.Server.CreateClient().SendAsync(Authorized(HttpMethod.Get, "/api/search?q=lighthouse&mode=semantic&k=1", user)))
            .ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
        Assert.Equal([kept], hits.Select(h => h.ConversationId));
    }

    private async Task<long> TombstonesOf(Guid conversation)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"select count(*) from {new SearchSchema(app.Store.Options.DatabaseSchemaName).Deletions} where conversation_id = $1", connection);
        command.Parameters.Add(new NpgsqlParameter { Value = conversation });
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private HttpRequestMessage Authorized(HttpMethod method, string path, string user)
    {
        var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));
        return request;
    }

    private Guid MainNode => app.Host.Services.GetRequiredService<IWolverineRuntime>().Options.UniqueNodeId;

    private string Rebuilds => new SearchSchema(app.Store.Options.DatabaseSchemaName).Rebuilds;

    private HttpClient Operator(HttpClient client)
    {
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser("operator"), null, "operator"));
        return client;
    }

    private async Task<DateTime> Heartbeat()
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand($"select heartbeat_at from {Rebuilds} where id = 1", connection);
        return (DateTime)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>Holds the vectors' table, which a rebuild's clean-up needs, until the returned transaction ends.</summary>
    private async Task<NpgsqlTransaction> LockVectorsAsync(NpgsqlConnection connection)
    {
        var transaction = await connection.BeginTransactionAsync();
        await using var locking = new NpgsqlCommand(
            $"lock table {new SearchSchema(app.Store.Options.DatabaseSchemaName).Vectors} in access exclusive mode", connection, transaction);
        await locking.ExecuteNonQueryAsync();
        return transaction;
    }

    /// <summary>Rebuild clean-ups (the orphan vectors' delete) waiting for a lock.</summary>
    private async Task<long> CleanUpsWaiting()
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query like '%with orphans as%' and pid <> pg_backend_pid()",
            connection);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private static async Task<RebuildStatusDto> RebuildStatus(HttpClient admin)
        => await (await admin.GetAsync("/api/admin/search/rebuild")).ReadAs<RebuildStatusDto>(HttpStatusCode.OK);

    /// <summary>Records a running rebuild of <paramref name="node"/> last heard from at <paramref name="heartbeat"/> (SQL); returns its run id.</summary>
    private async Task<Guid> WriteRebuildRow(Guid node, string heartbeat)
    {
        var run = Guid.NewGuid();
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand($"""
            insert into {Rebuilds} (id, run_id, state, started_at, node, heartbeat_at) values (1, $1, 'running', now(), $2, {heartbeat})
            on conflict (id) do update set run_id = excluded.run_id, state = excluded.state, started_at = excluded.started_at,
                finished_at = null, error = null, orphan_vectors_removed = null, node = excluded.node, heartbeat_at = excluded.heartbeat_at
            """, connection)
        {
            Parameters = { new() { Value = run }, new() { Value = node } },
        };
        await command.ExecuteNonQueryAsync();
        return run;
    }

    private sealed record RebuildStatusDto(string State, DateTimeOffset? StartedAt, DateTimeOffset? FinishedAt, string? Error, long? OrphanVectorsRemoved, Guid? Node);
}
