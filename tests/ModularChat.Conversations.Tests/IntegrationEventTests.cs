using System.Net;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Tests;

[Collection(AppCollection.Name)]
public sealed class IntegrationEventTests(ConversationsApp app)
{
    [Fact]
    public async Task Committed_events_reach_Wolverine_subscribers_with_their_tenant()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var c = await (await client.PostJson("/api/conversations", new { title = "events" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "hello events" });
        await client.PatchJson($"/api/conversations/{c.Id}", new { title = "renamed", metadata = new { app = "web" } });
        await client.DeleteAsync($"/api/conversations/{c.Id}");

        var received = await Eventually.Until(() => Task.FromResult(IntegrationEventProbe.Received.Where(r => r.Event.ConversationId == c.Id).ToList()), l => l.Count >= 5);

        Assert.All(received, r => Assert.Equal(user, r.Tenant));
        Assert.Single(received, r => r.Event is ConversationStarted { Title: "events" });
        Assert.Single(received, r => r.Event is MessageAppended { Sequence: 1, Content: "hello events", Role: MessageRole.User });
        Assert.Single(received, r => r.Event is ConversationRenamed { Title: "renamed" });
        Assert.Single(received, r => r.Event is ConversationMetadataChanged m && m.Metadata.Count == 1 && m.Metadata["app"] == "web");
        Assert.Single(received, r => r.Event is ConversationDeleted);
    }

    [Fact]
    public async Task A_rejected_append_publishes_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "quiet" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await Eventually.Until(() => Task.FromResult(IntegrationEventProbe.Received.Count(r => r.Event.ConversationId == c.Id)), n => n == 1);

        await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "ok", expectedVersion = 99 });
        await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "nobody", content = "bad" });
        // A later, accepted append is delivered; the rejected ones before it never are.
        await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "marker" });
        await Eventually.Until(() => Task.FromResult(IntegrationEventProbe.Received.Any(r => r.Event is MessageAppended { Content: "marker" } m && m.ConversationId == c.Id)), b => b);

        Assert.DoesNotContain(IntegrationEventProbe.Received, r => r.Event is MessageAppended m && m.ConversationId == c.Id && m.Content != "marker");
    }

}
