using Microsoft.Extensions.AI;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Providers.Features.Chat;

/// <summary>What the model is given for a turn, and how much of the conversation it covers.</summary>
/// <param name="SummaryThroughSequence">The last sequence the summary covers, when a summary was used.</param>
/// <param name="MessageCount">Conversation messages the context carries, verbatim or as replayed tool calls and results.</param>
/// <param name="Tokens">o200k tokens of every message sent (text, function names, arguments and results) plus each one's framing.</param>
internal sealed record ChatContext(IReadOnlyList<ChatMessage> Messages, long? SummaryThroughSequence, int MessageCount, int Tokens);

/// <summary>
/// A turn's context: the system prompt, then the conversation's context within the model's token budget
/// (<see cref="IConversationContexts"/>: the current summary and the most recent messages, cached across nodes).
/// The latest message (the user's new one) is always included, even when the budget is too small for it.
/// With <see cref="ChatTurnOptions.ReplayToolCalls"/> (the default) the tool calls and results of earlier turns that
/// are in the window are given to the model as function calls and results, so it remembers what its tools returned;
/// only whole call/result pairs are (<see cref="ToolCallReplay"/>), because providers refuse a pair cut in half.
/// Their metadata is read in one query, only when the window holds tool messages. Without replay, tool messages are
/// left out and the assistant's answers carry their outcome.
/// </summary>
internal sealed class ChatContextAssembler(
    IConversationContexts contexts, IConversationMessages conversations, ITokenCounter tokens, IOptionsMonitor<ChatTurnOptions> options)
{
    private const int ToolMessagesChunk = 256;

    /// <remarks>
    /// The conversation's share of the budget is the model's budget less the system prompt. What the turn then sends
    /// costs a little more than the conversation context it was given (the system prompt's framing, the summary's
    /// heading, replayed calls' function names): when that runs over the budget, the context is asked again for that
    /// much less (at most twice), so what is sent stays within the budget.
    /// </remarks>
    public async Task<ChatContext> AssembleAsync(string tenantId, Guid conversationId, string model, CancellationToken cancellationToken)
    {
        var settings = options.CurrentValue;
        var budget = settings.BudgetFor(model);
        var systemTokens = string.IsNullOrWhiteSpace(settings.SystemPrompt) ? 0 : tokens.Count(settings.SystemPrompt);
        var conversationBudget = Math.Max(1, budget - systemTokens);
        for (var attempt = 1; ; attempt++)
        {
            var assembled = await AssembleWithinAsync(tenantId, conversationId, settings, systemTokens, conversationBudget, cancellationToken);
            var over = assembled.Tokens - budget;
            if (over <= 0 || attempt == 3 || conversationBudget == 1)
            {
                return assembled; // (only the latest message, when it alone is over the budget, can still run over: it is always sent)
            }

            conversationBudget = Math.Max(1, conversationBudget - over);
        }
    }

    private async Task<ChatContext> AssembleWithinAsync(
        string tenantId, Guid conversationId, ChatTurnOptions settings, int systemTokens, int budget, CancellationToken cancellationToken)
    {
        var parts = new List<ContextPart>();
        if (systemTokens > 0)
        {
            parts.Add(new ContextPart(new ChatMessage(ChatRole.System, settings.SystemPrompt), systemTokens, 0));
        }

        var context = await contexts.GetAsync(tenantId, conversationId, budget, cancellationToken: cancellationToken)
            ?? throw new NotFoundException("Conversation", conversationId);
        if (context.Summary is { } summary)
        {
            var text = $"Summary of the conversation so far (messages 1 to {summary.ToSequence}):\n{summary.Text}";
            parts.Add(new ContextPart(new ChatMessage(ChatRole.System, text), tokens.Count(text), 0));
        }

        var window = context.Messages.ToList();
        if (context.Coverage.MessageCount > 0 && context.Coverage.MessagesTo != context.Coverage.MessageCount)
        {
            // The turn's own message must reach the model even when it alone is over the budget; retention may have taken
            // it out meanwhile (a summary covers it and none is kept), after a failed attempt that a client now retries.
            var latest = (await conversations.ReadLatestAsync(tenantId, conversationId, 1, cancellationToken: cancellationToken)).SingleOrDefault()
                ?? throw new ConflictException(
                    $"Message {context.Coverage.MessageCount}, the one this turn answers, has been taken out of the conversation by retention (a summary " +
                    "covers it), so the model would not see it. Ask again as a new turn (another externalId).",
                    new Dictionary<string, object?> { ["messageSequence"] = context.Coverage.MessageCount });
            window.Add(new ContextMessage(latest.Sequence, latest.Role, latest.Content, latest.TokenCount, latest.CreatedAt, latest.ExternalId));
        }

        var toolMessages = settings.ReplayToolCalls
            ? await ToolMessagesAsync(tenantId, conversationId, window, cancellationToken)
            : new Dictionary<long, ConversationMessage>();
        parts.AddRange(ToolCallReplay.Replay(window, toolMessages, tokens));
        var framing = Framing(context);
        return new ChatContext(
            parts.Select(p => p.Message).ToList(), context.Summary?.ToSequence, parts.Sum(p => p.ConversationMessages), parts.Sum(p => p.Tokens + framing));
    }

    /// <summary>The window's tool messages as stored, with the metadata that says what they are, by sequence.</summary>
    private async Task<IReadOnlyDictionary<long, ConversationMessage>> ToolMessagesAsync(
        string tenantId, Guid conversationId, List<ContextMessage> window, CancellationToken cancellationToken)
    {
        var found = new Dictionary<long, ConversationMessage>();
        var sequences = window.Where(m => m.Role == MessageRole.Tool).Select(m => m.Sequence).ToList();
        if (sequences.Count == 0)
        {
            return found;
        }

        await foreach (var chunk in conversations.ReadChunksAsync(
            tenantId, conversationId, sequences[0] - 1, sequences[^1], ToolMessagesChunk, cancellationToken))
        {
            foreach (var message in chunk.Where(m => m.Role == MessageRole.Tool))
            {
                found[message.Sequence] = message;
            }
        }

        return found;
    }

    /// <summary>
    /// Tokens a message costs beyond its content (role, separators). The Conversations module counts a fixed number per
    /// entry of a context (its own setting), so it is read back from the context's total: what this context sends is
    /// then counted the same way, including what it leaves out, replays differently or adds.
    /// </summary>
    private static int Framing(ConversationContext context)
    {
        var entries = context.Messages.Count + (context.Summary is null ? 0 : 1);
        var content = (context.Summary?.TokenCount ?? 0) + context.Messages.Sum(m => m.TokenCount);
        return entries == 0 ? 0 : Math.Max(0, (context.TotalTokens - content) / entries);
    }
}
