using Microsoft.Extensions.DependencyInjection;
using ModularChat.Providers.Features.Chat;
using ModularChat.Testing;

namespace ModularChat.Providers.Tests;

/// <summary>A chat turn's context comes from the conversation context service (summary + recent messages within the budget).</summary>
[Collection(AppCollection.Name)]
public sealed class ChatContextTests(ProvidersApp app)
{
    [Fact]
    public async Task The_context_is_the_system_prompt_and_the_recent_messages_that_fit_oldest_first()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var conversation = await client.StartConversationAsync();
        var messages = Enumerable.Range(1, 10).Select(i => new { role = i % 2 == 1 ? "user" : "assistant", content = $"message {i}" }).ToList();
        (await client.PostJson($"/api/conversations/{conversation}/messages/batch", new { messages })).EnsureSuccessStatusCode();

        await using var scope = app.Host.Services.CreateAsyncScope();
        var context = await scope.ServiceProvider.GetRequiredService<ChatContextAssembler>()
            .AssembleAsync(tenant, conversation, "fake-model", CancellationToken.None);

        Assert.Null(context.SummaryThroughSequence);
        Assert.Equal(10, context.MessageCount);
        Assert.Equal("system", context.Messages[0].Role.Value);
        Assert.Equal(Enumerable.Range(1, 10).Select(i => $"message {i}"), context.Messages.Skip(1).Select(m => m.Text));
        Assert.True(context.Tokens > 10);
    }
}
