using System.Net.Http.Headers;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// Errors are ProblemDetails whatever the request's <c>Accept</c> says: a streaming client sends
/// <c>text/event-stream</c> and a browser <c>text/html</c>, and ASP.NET Core's own writer declines both (the errors were a
/// 500, or their status with an empty body).
/// </summary>
[Collection(AppCollection.Name)]
public sealed class AcceptHeaderTests(ConversationsApp app)
{
    public static TheoryData<string> Accepts => ["text/event-stream", "text/html", "application/xml"];

    [Theory]
    [MemberData(nameof(Accepts))]
    public async Task Errors_are_problem_json_when_Accept_names_no_json_type(string accept)
    {
        using var anonymous = app.Host.Server.CreateClient();
        anonymous.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue(accept));
        using var user = app.Client(ModularChatApp.NewUser());
        user.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue(accept));
        var conversation = await user.NewConversation();

        var unauthorized = await (await anonymous.GetAsync("/api/conversations")).ShouldBeProblem(401);
        Assert.Contains("token is required", unauthorized.GetProperty("detail").GetString(), StringComparison.Ordinal);

        var forbidden = await (await user.GetAsync("/api/admin/retention")).ShouldBeProblem(403);
        Assert.Contains("admin", forbidden.GetProperty("detail").GetString(), StringComparison.Ordinal);

        var notFound = await (await user.GetAsync($"/api/conversations/{Guid.Empty}")).ShouldBeProblem(404);
        Assert.Equal("https://tools.ietf.org/html/rfc9110#section-15.5.5", notFound.GetProperty("type").GetString());
        Assert.True(notFound.TryGetProperty("traceId", out _), notFound.ToString());

        var invalid = await (await user.PostJson($"/api/conversations/{conversation.Id}/messages", new { role = "robot", content = "x" })).ShouldBeProblem(400);
        Assert.True(invalid.GetProperty("errors").TryGetProperty("role", out _), invalid.ToString());

        var conflict = await (await user.PostJson($"/api/conversations/{conversation.Id}/messages", new { role = "user", content = "x", expectedVersion = 5 }))
            .ShouldBeProblem(409);
        Assert.Equal(1, conflict.GetProperty("currentVersion").GetInt64());

        await (await user.GetAsync("/api/no-such-thing")).ShouldBeProblem(404);
        var stored = await (await user.GetAsync($"/api/conversations/{conversation.Id}")).ReadAs<ConversationDto>(System.Net.HttpStatusCode.OK);
        Assert.Equal(0, stored.MessageCount);
    }
}
