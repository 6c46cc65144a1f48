using Microsoft.Extensions.DependencyInjection;
using ModularChat.Providers.Features.Chat;

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
        // Nine messages: below the first summary milestone (10), so no summary is written meanwhile.
        var conversation = await ConversationOfAsync(client, 9, i => $"message {i}");

        await using var scope = app.Host.Services.CreateAsyncScope();
        var context = await scope.ServiceProvider.GetRequiredService<ChatContextAssembler>()
            .AssembleAsync(tenant, conversation, "fake-model", CancellationToken.None);

        Assert.Null(context.SummaryThroughSequence);
        Assert.Equal(9, context.MessageCount);
        Assert.Equal("system", context.Messages[0].Role.Value);
        Assert.Equal(Enumerable.Range(1, 9).Select(i => $"message {i}"), context.Messages.Skip(1).Select(m => m.Text));
        Assert.True(context.Tokens > 9);
    }

    [Fact]
    public async Task What_the_turn_sends_stays_within_the_models_budget_with_the_system_prompt_and_the_summary()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var conversation = await ConversationOfAsync(client, 40, i => $"Message {i} talks about the weather.");
        await client.WaitForSummary(conversation);

        await using var scope = app.Host.Services.CreateAsyncScope();
        var context = await scope.ServiceProvider.GetRequiredService<ChatContextAssembler>()
            .AssembleAsync(tenant, conversation, "fake-model", CancellationToken.None);

        var budget = scope.ServiceProvider.GetRequiredService<Microsoft.Extensions.Options.IOptions<ChatTurnOptions>>().Value.ContextTokenBudget;
        Assert.NotNull(context.SummaryThroughSequence);
        Assert.InRange(context.MessageCount, 2, 39); // the budget is full: more messages than fit
        Assert.InRange(context.Tokens, budget - 40, budget);
    }

    [Fact]
    public async Task Once_the_summaries_module_has_summarized_the_conversation_the_turn_starts_from_its_summary()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var conversation = await client.StartConversationAsync();
        var messages = Enumerable.Range(1, 12).Select(i => new
        {
            role = i % 2 == 1 ? "user" : "assistant",
            content = i == 3 ? "Our budget for the kitchen renovation is twelve thousand euros." : $"Small talk number {i}.",
        }).ToList();
        (await client.PostJson($"/api/conversations/{conversation}/messages/batch", new { messages })).EnsureSuccessStatusCode();

        // The real Summaries module writes one in the background (the first milestone is 10 messages).
        await client.WaitForSummary(conversation);

        await using var scope = app.Host.Services.CreateAsyncScope();
        var context = await scope.ServiceProvider.GetRequiredService<ChatContextAssembler>()
            .AssembleAsync(tenant, conversation, "fake-model", CancellationToken.None);

        Assert.InRange(context.SummaryThroughSequence!.Value, 10, 12);
        var summary = Assert.Single(context.Messages, m => m.Role.Value == "system" && m.Text.StartsWith("Summary of the conversation", StringComparison.Ordinal));
        Assert.Contains("kitchen renovation", summary.Text, StringComparison.Ordinal);
        Assert.Equal("system", context.Messages[0].Role.Value);
        Assert.Equal("Small talk number 12.", context.Messages[^1].Text);
    }

    [Fact]
    public async Task A_turns_context_ends_with_its_own_message_and_leaves_out_the_messages_appended_after_it()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var conversation = await ConversationOfAsync(client, 9, i => $"message {i}");

        await using var scope = app.Host.Services.CreateAsyncScope();
        var context = await scope.ServiceProvider.GetRequiredService<ChatContextAssembler>()
            .AssembleAsync(tenant, conversation, "fake-model", CancellationToken.None, throughSequence: 5);

        // Messages 6 to 9 came after the turn's message (5): another turn's, which this turn's model must not answer.
        Assert.Equal(Enumerable.Range(1, 5).Select(i => $"message {i}"), context.Messages.Skip(1).Select(m => m.Text));
        Assert.Equal(5, context.MessageCount);
    }

    [Fact]
    public async Task A_context_cut_at_the_turns_message_is_filled_with_the_messages_before_it_up_to_the_budget()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var conversation = await ConversationOfAsync(client, 40, i => $"Message {i} talks about the weather.");

        await using var scope = app.Host.Services.CreateAsyncScope();
        var assembler = scope.ServiceProvider.GetRequiredService<ChatContextAssembler>();
        _ = await assembler.AssembleAsync(tenant, conversation, "fake-model", CancellationToken.None); // the latest context, cached
        var context = await assembler.AssembleAsync(tenant, conversation, "fake-model", CancellationToken.None, throughSequence: 30);

        // Cut at 30, the cached window (the latest messages) leaves room: the messages before it are read, as many as fit.
        var budget = scope.ServiceProvider.GetRequiredService<Microsoft.Extensions.Options.IOptions<ChatTurnOptions>>().Value.ContextTokenBudget;
        var texts = context.Messages.Select(m => m.Text).ToList();
        Assert.Equal("Message 30 talks about the weather.", texts[^1]);
        var verbatim = texts.Where(t => t.StartsWith("Message ", StringComparison.Ordinal)).ToList(); // (a summary may be written meanwhile)
        Assert.Equal(Enumerable.Range(31 - verbatim.Count, verbatim.Count).Select(i => $"Message {i} talks about the weather."), verbatim);
        Assert.DoesNotContain(texts, t => t.Contains("Message 31 ", StringComparison.Ordinal) || t.Contains("Message 40 ", StringComparison.Ordinal));
        Assert.InRange(context.MessageCount, 2, 29); // the budget is full: not all 30 fit
        Assert.InRange(context.Tokens, budget - 40, budget);
    }

    /// <summary>A new conversation of <paramref name="count"/> messages (user, assistant, ...), appended in one batch.</summary>
    private static async Task<Guid> ConversationOfAsync(HttpClient client, int count, Func<int, string> content)
    {
        var conversation = await client.StartConversationAsync();
        var messages = Enumerable.Range(1, count).Select(i => new { role = i % 2 == 1 ? "user" : "assistant", content = content(i) }).ToList();
        (await client.PostJson($"/api/conversations/{conversation}/messages/batch", new { messages })).EnsureSuccessStatusCode();
        return conversation;
    }
}
