using System.Net;
using System.Net.Http.Headers;
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
        var hits = await Eventually(
            async () => (await (await nodeB.GetAsync("/api/search?q=lighthouse&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits,
            h => h.Count == 2);
        Assert.Equal(2, hits.Count);

        (await nodeA.DeleteAsync($"/api/conversations/{first}")).EnsureSuccessStatusCode();
        hits = await Eventually(
            async () => (await (await nodeB.GetAsync("/api/search?q=lighthouse&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits,
            h => h.Count == 1);
        Assert.Equal([secondConversation], hits.Select(h => h.ConversationId));
    }
}
