using System.Net;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using ModularChat.Conversations.Contracts;
using ModularChat.Search.Contracts;
using ModularChat.Summaries.Contracts;
using Npgsql;
using Wolverine.Runtime;
using Wolverine.Runtime.Agents;
using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>The read models: summaries, deletion, rebuilds, the contract other modules call.</summary>
[Collection(AppCollection.Name)]
public sealed class ReadModelTests(SearchApp app)
{
    [Fact]
    public async Task Summary_revisions_are_searchable_as_their_own_scope()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var id = await client.StartConversation("rome", Message("We should fly to Rome in May."), Message("Book the flights tonight.", "assistant"));
        await AppendSummaryAsync(user, id, 1, "They plan a trip to Rome in May and will book flights.", 1, 2);
        await AppendSummaryAsync(user, id, 2, "A May trip to Rome: flights booked, hotel near the Pantheon still open.", 1, 2);
        await client.WaitForIndexing(4);

        var summaries = (await (await client.GetAsync("/api/search?q=Pantheon+hotel&scope=summaries")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
        var messages = (await (await client.GetAsync("/api/search?q=Rome&scope=messages")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
        var all = (await client.Search("Rome")).Hits;

        var summary = summaries[0];
        Assert.Equal("summary", summary.Kind);
        Assert.Equal(2, summary.Revision);
        Assert.Equal(1, summary.FromSequence);
        Assert.Equal(2, summary.ToSequence);
        Assert.Null(summary.Sequence);
        Assert.Equal(id, summary.ConversationId);
        Assert.All(summaries, h => Assert.Equal("summary", h.Kind));
        Assert.All(messages, h => Assert.Equal("message", h.Kind));
        Assert.Contains(all, h => h.Kind == "summary");
        Assert.Contains(all, h => h.Kind == "message");
    }

    [Fact]
    public async Task Deleting_a_conversation_removes_its_search_entries_and_vectors()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var doomed = await client.StartConversation("doomed", Message("the zebra crossing by the bakery"), Message("zebra stripes everywhere", "assistant"));
        var kept = await client.StartConversation("kept", Message("a zebra at the zoo"));
        await AppendSummaryAsync(user, doomed, 1, "Zebras and a bakery.", 1, 2);
        await client.WaitForIndexing(4);
        Assert.Equal(4, await CountAsync("mc_search_vectors", user, null));
        Assert.Equal(4, (await client.Search("zebra")).Hits.Count); // three messages and the summary

        (await client.DeleteAsync($"/api/conversations/{doomed}")).EnsureSuccessStatusCode();

        foreach (var table in new[] { "mc_search_entries", "mc_search_vectors", "mc_search_pending", "mc_search_stats" })
        {
            var left = await Eventually.Until(() => CountAsync(table, user, doomed), n => n == 0);
            Assert.True(left == 0, $"{table} still holds {left} rows of the deleted conversation");
        }

        Assert.Equal(1, await CountAsync("mc_search_deletions", user, doomed));
        Assert.Equal(1, await CountAsync("mc_search_vectors", user, null));
        var hits = (await client.Search("zebra")).Hits;
        Assert.Equal([kept], hits.Select(h => h.ConversationId));

        // A summary that finishes after the delete does not bring the conversation back.
        await AppendSummaryAsync(user, doomed, 2, "Zebras again.", 1, 2);
        await AppendSummaryAsync(user, kept, 1, "A zebra at the zoo.", 1, 1);
        await client.WaitForIndexing(2);
        Assert.Equal(0, await CountAsync("mc_search_entries", user, doomed));
    }

    [Fact]
    public async Task A_summary_that_finishes_after_the_deletion_and_its_tombstone_does_not_bring_the_conversation_back()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var doomed = await client.StartConversation("doomed", Message("the walrus on the ice floe"));
        var kept = await client.StartConversation("kept", Message("a walrus at the aquarium"));
        await client.WaitForIndexing(2);
        // Tombstones live 2 s on this node (1 h on the main one): its clean-up removes the deleted conversation's.
        await using var second = await app.StartSearchOnlyNodeAsync(new Dictionary<string, string?>
        {
            ["Search:TombstoneLifetime"] = "00:00:02",
            ["Search:VectorIndex:IdleEviction"] = "00:00:01",
        });

        (await client.DeleteAsync($"/api/conversations/{doomed}")).EnsureSuccessStatusCode();
        await Eventually.Until(() => CountAsync("mc_search_entries", user, doomed), n => n == 0, what: "The deleted conversation's entries were not removed");
        await Eventually.Until(() => CountAsync("mc_search_deletions", user, doomed), n => n == 0, what: "The tombstone was not removed");

        // A summary job that read the conversation before its deletion stores its revision now (the model answered late),
        // after the tombstone is gone, whatever the search indexing's lag (nothing bounds it: ADR 0008).
        await AppendSummaryAsync(user, doomed, 1, "A walrus on the ice.", 1, 1);
        await AppendSummaryAsync(user, kept, 1, "A walrus at the aquarium.", 1, 1);
        await Eventually.Until(() => CountAsync("mc_search_entries", user, kept), n => n == 2, what: "The kept conversation's summary was not indexed");

        Assert.Equal(0, await CountAsync("mc_search_entries", user, doomed));
        Assert.Equal(0, await CountAsync("mc_search_stats", user, doomed));
        Assert.Equal([kept, kept], (await client.Search("walrus")).Hits.Select(h => h.ConversationId));
    }

    [Fact]
    public async Task A_rebuild_gives_the_same_read_model_and_results_as_the_live_build()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var first = await client.StartConversation("first",
            Message("Planning the garden: tomatoes, basil and a lemon tree.", externalId: "g1", metadata: new { speaker = "Ana" }),
            Message("Lemon trees need a sunny wall.", "assistant", "g2"));
        var second = await client.StartConversation("second", Message("The lemon cake recipe needs three eggs."));
        var deleted = await client.StartConversation("gone", Message("lemon lemon lemon"));
        await AppendSummaryAsync(user, first, 1, "A garden plan with a lemon tree.", 1, 2);
        await client.WaitForIndexing(5);
        (await client.DeleteAsync($"/api/conversations/{deleted}")).EnsureSuccessStatusCode();
        await Eventually.Until(() => CountAsync("mc_search_entries", user, deleted), n => n == 0);
        await client.WaitForIndexing(4);
        var queries = new[] { "lemon", "garden+tree", "cake+eggs", "sunny" };
        var before = await SnapshotAsync(user);
        var resultsBefore = await ResultsAsync(client, queries);

        using var admin = app.Client(ModularChatApp.NewUser("operator"), roles: "operator");
        await (await admin.PostAsync("/api/admin/search/rebuild", null)).ReadAs<RebuildStatus>(HttpStatusCode.Accepted);
        var status = await Eventually.Until(
            async () => await (await admin.GetAsync("/api/admin/search/rebuild")).ReadAs<RebuildStatus>(HttpStatusCode.OK),
            s => s.State is "succeeded" or "failed", seconds: 120);
        Assert.Equal("succeeded", status.State);
        await client.WaitForIndexing(4);

        Assert.Equal(before, await SnapshotAsync(user));
        Assert.Equal(resultsBefore, await ResultsAsync(client, queries));

        // The live projection runs on after the rebuild.
        await client.PostJson($"/api/conversations/{second}/messages", Message("and lemon zest on top"));
        await client.WaitForIndexing(5);
        Assert.Contains((await client.Search("zest")).Hits, h => h.ConversationId == second);
    }

    [Fact]
    public async Task The_rebuild_is_for_the_services_operators_only()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        Assert.Equal(HttpStatusCode.Forbidden, (await client.PostAsync("/api/admin/search/rebuild", null)).StatusCode);
        using var tenantAdmin = app.Client(ModularChatApp.NewUser("admin"), roles: "admin"); // every tenant's read model: not a tenant's call
        Assert.Equal(HttpStatusCode.Forbidden, (await tenantAdmin.PostAsync("/api/admin/search/rebuild", null)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Host.Server.CreateClient().PostAsync("/api/admin/search/rebuild", null)).StatusCode);
    }

    [Fact]
    public async Task The_projections_rebuild_command_rebuilds_the_search_read_model()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        await client.StartConversation("cli", Message("the command line rebuilds the search index"), Message("with projections rebuild", "assistant"));
        await client.WaitForIndexing(2);
        var before = await SnapshotAsync(user);
        var resultsBefore = await ResultsAsync(client, ["command+line", "projections"]);

        // The host's own projection agent is paused while the command runs, as the service would be stopped when an operator
        // runs it (README). Projections run as Wolverine-managed agents: Marten's projection coordinator does not stop them,
        // and an agent only stopped is started again by Wolverine's reconciliation: it is paused, then stopped.
        var agents = app.Host.Services.GetRequiredService<IWolverineRuntime>().Agents;
        var agent = await app.Host.Services.GetRequiredService<IEventSubscriptionAgentFamily>().FindAgentUriAsync("SearchEntries:All", null, CancellationToken.None);
        Assert.NotNull(agent);
        Assert.Contains(agent, agents.AllRunningAgentUris());
        var pause = new AgentRestrictions([]);
        pause.PauseAgent(agent);
        await agents.ApplyRestrictionsAsync(pause, CancellationToken.None);
        await agents.StopLocallyAsync(agent);
        // And the node leaves the node list (its heartbeat stopped), as a stopped service does: the command refuses to run
        // beside a live node.
        var heartbeat = app.Host.Services.GetServices<IHostedService>().Single(s => s.GetType().Name == "NodeHeartbeat");
        await heartbeat.StopAsync(CancellationToken.None);
        try
        {
            Assert.DoesNotContain(agent, agents.AllRunningAgentUris());
            var (exitCode, output) = await app.RunHostCommandAsync(null, "projections", "rebuild", "-p", "SearchEntries");
            Assert.True(exitCode == 0, output);
            Assert.Contains("SearchEntries", output, StringComparison.Ordinal);
            Assert.DoesNotContain(agent, agents.AllRunningAgentUris()); // it did not come back while the command ran
        }
        finally
        {
            await heartbeat.StartAsync(CancellationToken.None);
            var resume = new AgentRestrictions([.. pause.Current]);
            resume.RestartAgent(agent);
            await agents.ApplyRestrictionsAsync(resume, CancellationToken.None);
            if (!agents.AllRunningAgentUris().Contains(agent))
            {
                await agents.StartLocallyAsync(agent);
            }
        }

        Assert.Contains(agent, agents.AllRunningAgentUris());
        await client.WaitForIndexing(2);
        Assert.Equal(before, await SnapshotAsync(user));
        Assert.Equal(resultsBefore, await ResultsAsync(client, ["command+line", "projections"]));
    }

    [Fact]
    public async Task Conversation_search_for_other_modules_leaves_out_the_given_range()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var id = await client.StartConversation("context",
            Message("My sister's wedding is in Porto."),
            Message("What a lovely city for a wedding.", "assistant"),
            Message("Unrelated: the printer is broken."),
            Message("Back to the wedding: we need a photographer.", "assistant"),
            Message("And a wedding cake."));
        var other = await client.StartConversation("other", Message("Another wedding entirely."));
        await client.WaitForIndexing(6);
        var search = app.Host.Services.GetRequiredService<IConversationSearch>();

        var all = await search.SearchAsync(new ConversationSearchRequest(user, id, "wedding", 10));
        var older = await search.SearchAsync(new ConversationSearchRequest(user, id, "wedding", 10, ExcludeFromSequence: 4, ExcludeToSequence: 5));
        var foreign = await search.SearchAsync(new ConversationSearchRequest("someone-else", id, "wedding", 10));

        var mine = await MessageIdsAsync(client, id);
        var others = await MessageIdsAsync(client, other);
        Assert.Single(others);
        Assert.Superset(new HashSet<long> { 1, 2, 4, 5 }, all.Select(h => h.Sequence).ToHashSet());
        // The other conversation's wedding is not in it: every hit is a message of this conversation.
        Assert.DoesNotContain(all, h => others.Contains(h.MessageId));
        Assert.All(all, h => Assert.Contains(h.MessageId, mine));
        Assert.DoesNotContain(older, h => h.Sequence is 4 or 5);
        Assert.Contains(older, h => h.Sequence == 1);
        Assert.True(all.Zip(all.Skip(1)).All(p => p.First.Score >= p.Second.Score));
        Assert.Empty(foreign);
        Assert.DoesNotContain(all, h => h.MessageId == Guid.Empty);
    }

    /// <summary>The ids of the conversation's messages.</summary>
    private static async Task<HashSet<Guid>> MessageIdsAsync(HttpClient client, Guid conversation)
    {
        var page = await (await client.GetAsync($"/api/conversations/{conversation}/messages?limit=500")).ReadAs<JsonElement>(HttpStatusCode.OK);
        return page.GetProperty("items").EnumerateArray().Select(m => m.GetProperty("id").GetGuid()).ToHashSet();
    }

    [Fact]
    public async Task A_message_dated_at_an_end_of_the_date_range_is_indexed_and_indexing_goes_on()
    {
        // The API now refuses such a createdAt (PostgreSQL stores it as -infinity, which has no month): an event stored
        // before that, or by another writer, must still be indexed rather than stop the index for every tenant.
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var id = await client.StartConversation("dates");
        await using (var session = app.Store.LightweightSession(user))
        {
            session.Events.Append(id, new MessageAppended(id, Guid.CreateVersion7(), 1, MessageRole.User, "an undated postcard from Lisbon", null, null,
                DateTimeOffset.MinValue, DateTimeOffset.UtcNow, 6));
            await session.SaveChangesAsync();
        }

        (await client.PostJson($"/api/conversations/{id}/messages", Message("a dated letter from Porto"))).EnsureSuccessStatusCode();
        await client.WaitForIndexing(2);

        var postcard = (await client.Search("postcard&mode=keyword")).Hits[0];
        Assert.Equal(1, postcard.Sequence);
        Assert.Equal(DateTimeOffset.MinValue, postcard.CreatedAt);
        Assert.Equal(2, (await client.Search("letter&mode=keyword")).Hits[0].Sequence);
    }

    private async Task AppendSummaryAsync(string tenant, Guid conversationId, int revision, string text, long from, long to)
    {
        // As the Summaries module will: one summary stream per conversation, SummaryRevised events on it.
        await using var session = app.Store.LightweightSession(tenant);
        var e = new SummaryRevised(conversationId, revision, text, from, to, "test", "extractive", "test-model", "1", "A", 10, 5, TimeSpan.FromSeconds(1),
            DateTimeOffset.UtcNow);
        var stream = SummaryStreamId(conversationId);
        if (revision == 1)
        {
            session.Events.StartStream(stream, e);
        }
        else
        {
            session.Events.Append(stream, e);
        }

        await session.SaveChangesAsync();
    }

    private static Guid SummaryStreamId(Guid conversationId)
    {
        var bytes = conversationId.ToByteArray();
        bytes[0] ^= 0x5A;
        return new Guid(bytes);
    }

    private async Task<long> CountAsync(string table, string tenant, Guid? conversationId)
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(
            $"select count(*) from modularchat.{table} where tenant_id = $1 and ($2::uuid is null or conversation_id = $2)", connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)conversationId ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Uuid });
        return (long)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>Everything the projection stores for a tenant, as text, in a stable order.</summary>
    private async Task<string> SnapshotAsync(string tenant)
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand("""
            select string_agg(row, E'\n' order by row) from (
                select concat_ws('|', 'entry', id, conversation_id, kind, sequence, from_sequence, revision, role, speaker, external_id, metadata::text,
                                 created_at, content, search_vector::text, lexeme_count) as row
                from modularchat.mc_search_entries where tenant_id = $1
                union all select concat_ws('|', 'stats', conversation_id, kind, documents, lexemes) from modularchat.mc_search_stats where tenant_id = $1
                union all select concat_ws('|', 'totals', kind, documents, lexemes) from modularchat.mc_search_totals where tenant_id = $1
                union all select concat_ws('|', 'term', lexeme, documents) from modularchat.mc_search_terms where tenant_id = $1 and documents > 0
                union all select concat_ws('|', 'vector', entry_id, model, dimensions, md5(vector), text_hash) from modularchat.mc_search_vectors where tenant_id = $1
                union all select concat_ws('|', 'deleted', conversation_id) from modularchat.mc_search_deletions where tenant_id = $1
            ) rows
            """, connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenant });
        return (string)(await command.ExecuteScalarAsync())!;
    }

    private static async Task<List<string>> ResultsAsync(HttpClient client, IEnumerable<string> queries)
    {
        var results = new List<string>();
        foreach (var query in queries)
        {
            var hits = (await client.Search(query)).Hits;
            results.Add(query + ": " + string.Join(", ", hits.Select(h => $"{h.Id}:{h.Score:F6}:{h.Snippet}")));
        }

        return results;
    }

    private sealed record RebuildStatus(string State, DateTimeOffset? StartedAt, DateTimeOffset? FinishedAt, string? Error, long? OrphanVectorsRemoved);
}
