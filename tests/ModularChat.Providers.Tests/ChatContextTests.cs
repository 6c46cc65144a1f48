using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Conversations.Contracts;
using ModularChat.Providers.Features.Chat;
using ModularChat.Summaries.Contracts;
using ModularChat.Testing;

namespace ModularChat.Providers.Tests;

/// <summary>The context assembly picks up the Summaries module's contract when it is registered (it is not, yet, in the Host).</summary>
[Collection(AppCollection.Name)]
public sealed class ChatContextTests(ProvidersApp app)
{
    [Fact]
    public async Task With_a_summary_the_context_is_the_summary_and_the_messages_after_it()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var conversation = await client.StartConversationAsync();
        var messages = Enumerable.Range(1, 10).Select(i => new { role = i % 2 == 1 ? "user" : "assistant", content = $"message {i}" }).ToList();
        (await client.PostJson($"/api/conversations/{conversation}/messages/batch", new { messages })).EnsureSuccessStatusCode();

        var withSummary = Assembler(new Summary(new ConversationSummary(conversation, "They planned a trip to Lisbon.", 1, 7, 1, 8, DateTimeOffset.UtcNow)));
        var context = await withSummary.AssembleAsync(tenant, conversation, "fake-model", CancellationToken.None);

        Assert.Equal(7, context.SummaryThroughSequence);
        Assert.Equal(3, context.MessageCount);
        Assert.Contains("They planned a trip to Lisbon.", context.Messages[1].Text, StringComparison.Ordinal);
        Assert.Equal(["message 8", "message 9", "message 10"], context.Messages.Skip(2).Select(m => m.Text));

        var withoutSummary = Assembler(null);
        context = await withoutSummary.AssembleAsync(tenant, conversation, "fake-model", CancellationToken.None);
        Assert.Null(context.SummaryThroughSequence);
        Assert.Equal(10, context.MessageCount);
    }

    private ChatContextAssembler Assembler(IConversationSummaries? summaries)
    {
        var services = new ServiceCollection();
        if (summaries is not null)
        {
            services.AddSingleton(summaries);
        }

        return new ChatContextAssembler(
            app.Host.Services.GetRequiredService<IConversationMessages>(),
            services.BuildServiceProvider(),
            app.Host.Services.GetRequiredService<ITokenCounter>(),
            app.Host.Services.GetRequiredService<IOptionsMonitor<ChatTurnOptions>>());
    }

    private sealed class Summary(ConversationSummary summary) : IConversationSummaries
    {
        public Task<ConversationSummary?> GetCurrentAsync(string tenantId, Guid conversationId, CancellationToken cancellationToken = default)
            => Task.FromResult<ConversationSummary?>(conversationId == summary.ConversationId ? summary : null);
    }
}
