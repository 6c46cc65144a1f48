using System.Net;
using System.Net.Http.Headers;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Search.Projection;
using ModularChat.Search.Storage;
using ModularChat.Search.Vectors;
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

        var problem = await (await admin.PostAsync("/api/admin/search/rebuild", null)).ShouldBeProblem(409);

        Assert.Contains("does not run the search projection", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal("idle", (await (await admin.GetAsync("/api/admin/search/rebuild")).ReadAs<System.Text.Json.JsonElement>(HttpStatusCode.OK)).GetProperty("state").GetString());
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

        var problem = await (await admin.PostAsync("/api/admin/search/rebuild", null)).ShouldBeProblem(409);

        Assert.Contains("Search:MaxOnlineRebuildEvents", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Contains("--shard-timeout", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.True(problem.GetProperty("events").GetInt64() > 1);
        Assert.Equal(1, problem.GetProperty("maxOnlineRebuildEvents").GetInt64());
        Assert.Equal("idle", (await (await admin.GetAsync("/api/admin/search/rebuild")).ReadAs<System.Text.Json.JsonElement>(HttpStatusCode.OK)).GetProperty("state").GetString());
        Assert.Single((await (await client.GetAsync("/api/search?q=ferry")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits);
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
}
