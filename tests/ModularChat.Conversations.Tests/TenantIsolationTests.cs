using System.Net;

namespace ModularChat.Conversations.Tests;

[Collection(AppCollection.Name)]
public sealed class TenantIsolationTests(ConversationsApp app)
{
    [Fact]
    public async Task Another_tenants_conversation_answers_404_on_every_endpoint()
    {
        using var owner = app.Client(ModularChatApp.NewUser("owner"));
        using var stranger = app.Client(ModularChatApp.NewUser("stranger"));
        var c = await (await owner.PostJson("/api/conversations", new { title = "private" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await owner.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "secret", externalId = "s1" });
        var id = c.Id;

        await (await stranger.GetAsync($"/api/conversations/{id}")).ShouldBeProblem(404);
        await (await stranger.PatchJson($"/api/conversations/{id}", new { title = "mine now" })).ShouldBeProblem(404);
        await (await stranger.GetAsync($"/api/conversations/{id}/messages")).ShouldBeProblem(404);
        await (await stranger.GetAsync($"/api/conversations/{id}/messages/1")).ShouldBeProblem(404);
        await (await stranger.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "intrude" })).ShouldBeProblem(404);
        await (await stranger.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "intrude", externalId = "s1" })).ShouldBeProblem(404);
        await (await stranger.PostJson($"/api/conversations/{id}/messages/batch", new { messages = new[] { new { role = "user", content = "x" } } })).ShouldBeProblem(404);
        await (await stranger.DeleteAsync($"/api/conversations/{id}")).ShouldBeProblem(404);
        var list = await (await stranger.GetAsync("/api/conversations")).ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
        Assert.Empty(list.Items);

        // The owner's data is untouched.
        var after = await (await owner.GetAsync($"/api/conversations/{id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(("private", 1L), (after.Title, after.MessageCount));
    }

    [Fact]
    public async Task Users_of_the_same_tenant_claim_share_conversations()
    {
        var tenant = ModularChatApp.NewUser("team");
        using var alice = app.Client("alice", tenant);
        using var bob = app.Client("bob", tenant);
        var c = await (await alice.PostJson("/api/conversations", new { title = "shared" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        var seen = await (await bob.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal("shared", seen.Title);
    }
}
