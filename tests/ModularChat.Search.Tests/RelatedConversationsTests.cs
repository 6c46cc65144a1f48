using System.Net;
using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

[Collection(AppCollection.Name)]
public sealed class RelatedConversationsTests(SearchApp app)
{
    [Fact]
    public async Task The_most_similar_conversations_come_first_with_their_scores()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var bread = await client.StartConversation("bread",
            Message("My sourdough bread did not rise."), Message("Feed the sourdough starter with flour and water.", "assistant"),
            Message("The bread crust was too dark."));
        var baking = await client.StartConversation("baking",
            Message("How long should bread dough rise?"), Message("A sourdough dough rises slowly; give it a warm place.", "assistant"));
        var cars = await client.StartConversation("cars",
            Message("The car battery died this morning."), Message("Jump-start it or replace the battery.", "assistant"));
        await client.WaitForIndexing(7);

        var related = await (await client.GetAsync($"/api/conversations/{bread}/related?k=5")).ReadAs<RelatedResponse>(HttpStatusCode.OK);

        Assert.Equal(bread, related.ConversationId);
        Assert.Equal([baking, cars], related.Related.Select(r => r.ConversationId));
        Assert.Equal("baking", related.Related[0].Title);
        Assert.True(related.Related[0].Score > related.Related[1].Score);
        Assert.Single((await (await client.GetAsync($"/api/conversations/{bread}/related?k=1")).ReadAs<RelatedResponse>(HttpStatusCode.OK)).Related);
    }

    [Fact]
    public async Task Conversation_metadata_limits_the_related_conversations_to_those_that_have_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        async Task<Guid> Start(string title, string user, params object[] messages)
        {
            var id = (await (await client.PostJson("/api/conversations", new { title, metadata = new { userId = user } }))
                .ReadAs<System.Text.Json.JsonElement>(HttpStatusCode.Created)).GetProperty("id").GetGuid();
            await (await client.PostJson($"/api/conversations/{id}/messages/batch", new { messages })).ReadAs<System.Text.Json.JsonElement>(HttpStatusCode.Created);
            return id;
        }

        var bread = await Start("bread", "alice", Message("My sourdough bread did not rise."), Message("Feed the sourdough starter.", "assistant"));
        var bobsBaking = await Start("baking", "bob", Message("How long should sourdough bread rise?"), Message("A sourdough dough rises slowly.", "assistant"));
        var cars = await Start("cars", "alice", Message("The car battery died this morning."), Message("Replace the battery.", "assistant"));
        await client.WaitForIndexing(6);

        async Task<Guid[]> Related(string filter)
            => [.. (await (await client.GetAsync($"/api/conversations/{bread}/related?k=5&{filter}")).ReadAs<RelatedResponse>(HttpStatusCode.OK))
                .Related.Select(r => r.ConversationId)];

        Assert.Equal([bobsBaking, cars], await Related(""));
        Assert.Equal([cars], await Related("conversationMetadata=userId=alice"));
        Assert.Equal([bobsBaking], await Related("conversationMetadata=userId=bob"));
        Assert.Empty(await Related("conversationMetadata=userId=carol"));
        await (await client.GetAsync($"/api/conversations/{bread}/related?conversationMetadata=userId")).ShouldBeProblem(400);
    }

    [Fact]
    public async Task Unknown_conversations_and_bad_k_get_problems()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await client.StartConversation("alone");
        await (await client.GetAsync($"/api/conversations/{Guid.NewGuid()}/related")).ShouldBeProblem(404);
        await (await client.GetAsync($"/api/conversations/{id}/related?k=0")).ShouldBeProblem(400);
        await (await client.GetAsync($"/api/conversations/{id}/related?k=51")).ShouldBeProblem(422);
        Assert.Empty((await (await client.GetAsync($"/api/conversations/{id}/related")).ReadAs<RelatedResponse>(HttpStatusCode.OK)).Related);
    }

    private sealed record Related(Guid ConversationId, string Title, double Score);

    private sealed record RelatedResponse(Guid ConversationId, string Model, List<Related> Related);
}
