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
/// The context ends with the turn's own message (<c>throughSequence</c>), which is always included, even when the budget
/// is too small for it: messages appended after it (by turns of the same conversation running at once, or by other
/// clients) are left out, so that each turn's model answers its own message, not the one another turn brought.
/// The cached context (the conversation's latest) is cut at that message, and when that leaves room in the budget the
/// messages before the window are read to fill it, as the context would have held them.
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

    /// <summary>Messages read at a time when the window cut at the turn's message is filled from the database.</summary>
    private const int FillChunk = 64;

    /// <remarks>
    /// The conversation's share of the budget is the model's budget less the system prompt. What the turn then sends
    /// costs a little more than the conversation context it was given (the system prompt's framing, the summary's
    /// heading, replayed calls' function names): when that runs over the budget, the context is asked again for that
    /// much less (at most twice), so what is sent stays within the budget.
    /// </remarks>
    /// <param name="throughSequence">The turn's own message, the last one the model is given (null: the latest message).</param>
    public async Task<ChatContext> AssembleAsync(
        string tenantId, Guid conversationId, string model, CancellationToken cancellationToken, long? throughSequence = null)
    {
        var settings = options.CurrentValue;
        var budget = settings.BudgetFor(model);
        var systemTokens = string.IsNullOrWhiteSpace(settings.SystemPrompt) ? 0 : tokens.Count(settings.SystemPrompt);
        var conversationBudget = Math.Max(1, budget - systemTokens);
        for (var attempt = 1; ; attempt++)
        {
            var assembled = await AssembleWithinAsync(tenantId, conversationId, settings, systemTokens, conversationBudget, throughSequence, cancellationToken);
            var over = assembled.Tokens - budget;
            if (over <= 0 || attempt == 3 || conversationBudget == 1)
            {
                return assembled; // (only the turn's message, when it alone is over the budget, can still run over: it is always sent)
            }

            conversationBudget = Math.Max(1, conversationBudget - over);
        }
    }

    private async Task<ChatContext> AssembleWithinAsync(
        string tenantId, Guid conversationId, ChatTurnOptions settings, int systemTokens, int budget, long? throughSequence,
        CancellationToken cancellationToken)
    {
        var parts = new List<ContextPart>();
        if (systemTokens > 0)
        {
            parts.Add(new ContextPart(new ChatMessage(ChatRole.System, settings.SystemPrompt), systemTokens, 0));
        }

        var context = await contexts.GetAsync(tenantId, conversationId, budget, cancellationToken: cancellationToken)
            ?? throw new NotFoundException("Conversation", conversationId);
        var through = throughSequence ?? context.Coverage.MessageCount;
        var framing = Framing(context);
        // A summary written since the turn's message was appended may tell of later messages: it is left out then.
        var summary = context.Summary is { } current && current.ToSequence <= through ? current : null;
        if (summary is not null)
        {
            var text = $"Summary of the conversation so far (messages 1 to {summary.ToSequence}):\n{summary.Text}";
            parts.Add(new ContextPart(new ChatMessage(ChatRole.System, text), tokens.Count(text), 0));
        }

        var window = await WindowThroughAsync(tenantId, conversationId, context, summary, through, budget, framing, cancellationToken);
        var toolMessages = settings.ReplayToolCalls
            ? await ToolMessagesAsync(tenantId, conversationId, window, cancellationToken)
            : new Dictionary<long, ConversationMessage>();
        parts.AddRange(ToolCallReplay.Replay(window, toolMessages, tokens));
        return new ChatContext(
            parts.Select(p => p.Message).ToList(), summary?.ToSequence, parts.Sum(p => p.ConversationMessages), parts.Sum(p => p.Tokens + framing));
    }

    /// <summary>
    /// The latest messages up to and including <paramref name="through"/> that fit in <paramref name="budget"/> beside the
    /// summary, oldest first; <paramref name="through"/> itself always. The cached context's messages are used as they are
    /// when they end there (the usual turn, alone on its conversation); messages after it are dropped, and the room they
    /// leave is filled with the ones before the window, newest first while they fit, as the context service picks them.
    /// </summary>
    private async Task<List<ContextMessage>> WindowThroughAsync(
        string tenantId, Guid conversationId, ConversationContext context, ContextSummary? summary, long through, int budget, int framing,
        CancellationToken cancellationToken)
    {
        var window = context.Messages.Where(m => m.Sequence <= through).ToList();
        var trimmed = window.Count < context.Messages.Count || !ReferenceEquals(summary, context.Summary);
        if (window.Count == 0 || window[^1].Sequence != through)
        {
            // The turn's message is not in the window: alone over the budget, or behind the messages that came after it.
            // The window is read again from it, back.
            window.Clear();
        }
        else if (!trimmed)
        {
            return window;
        }

        var used = (summary is null ? 0 : summary.TokenCount + framing) + window.Sum(m => m.TokenCount + framing);
        var before = window.Count > 0 ? window[0].Sequence : through + 1;
        var older = new List<ContextMessage>();
        var full = false;
        while (!full && before > 1)
        {
            var page = await conversations.ReadLatestAsync(tenantId, conversationId, FillChunk, before, cancellationToken);
            for (var i = page.Count - 1; i >= 0; i--)
            {
                var message = page[i];
                var cost = message.TokenCount + framing;
                var own = window.Count == 0 && older.Count == 0;
                if (own && message.Sequence != through)
                {
                    // The turn's own message must reach the model even when it alone is over the budget; retention may have
                    // taken it out meanwhile (a summary covers it and none is kept), after a failed attempt a client now retries.
                    throw TakenOut(through);
                }

                if (!own && used + cost > budget)
                {
                    full = true;
                    break;
                }

                older.Add(new ContextMessage(message.Sequence, message.Role, message.Content, message.TokenCount, message.CreatedAt, message.ExternalId));
                used += cost;
            }

            if (page.Count < FillChunk)
            {
                break;
            }

            before = page[0].Sequence;
        }

        if (window.Count == 0 && older.Count == 0)
        {
            throw TakenOut(through);
        }

        older.Reverse();
        older.AddRange(window);
        return older;
    }

    private static ConflictException TakenOut(long sequence) => new(
        $"Message {sequence}, the one this turn answers, has been taken out of the conversation by retention (a summary " +
        "covers it), so the model would not see it. Ask again as a new turn (another externalId).",
        new Dictionary<string, object?> { ["messageSequence"] = sequence });

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
