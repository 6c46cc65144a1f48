using Microsoft.Extensions.AI;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Providers.Features.Chat;

/// <summary>What the model is given for a turn, and how much of the conversation it covers.</summary>
/// <param name="SummaryThroughSequence">The last sequence the summary covers, when a summary was used.</param>
/// <param name="MessageCount">Conversation messages included verbatim.</param>
/// <param name="Tokens">o200k tokens of the whole context.</param>
internal sealed record ChatContext(IReadOnlyList<ChatMessage> Messages, long? SummaryThroughSequence, int MessageCount, int Tokens);

/// <summary>
/// A turn's context: the system prompt, then the conversation's context within the model's token budget
/// (<see cref="IConversationContexts"/>: the current summary and the most recent messages, cached across nodes).
/// Tool calls and results of earlier turns are left out: the assistant's answers carry their outcome, and a
/// call/result pair cut in half would be refused by providers. The latest message (the user's new one) is always
/// included, even when the budget is too small for it.
/// </summary>
internal sealed class ChatContextAssembler(
    IConversationContexts contexts, IConversationMessages conversations, ITokenCounter tokens, IOptionsMonitor<ChatTurnOptions> options)
{
    public async Task<ChatContext> AssembleAsync(string tenantId, Guid conversationId, string model, CancellationToken cancellationToken)
    {
        var settings = options.CurrentValue;
        var messages = new List<ChatMessage>();
        var systemTokens = 0;
        if (!string.IsNullOrWhiteSpace(settings.SystemPrompt))
        {
            messages.Add(new ChatMessage(ChatRole.System, settings.SystemPrompt));
            systemTokens = tokens.Count(settings.SystemPrompt);
        }

        var budget = Math.Max(1, settings.BudgetFor(model) - systemTokens);
        var context = await contexts.GetAsync(tenantId, conversationId, budget, cancellationToken: cancellationToken)
            ?? throw new NotFoundException("Conversation", conversationId);
        if (context.Summary is { } summary)
        {
            messages.Add(new ChatMessage(ChatRole.System, $"Summary of the conversation so far (messages 1 to {summary.ToSequence}):\n{summary.Text}"));
        }

        var verbatim = context.Messages.Where(m => m.Role != MessageRole.Tool).Select(m => (m.Sequence, m.Role, m.Content)).ToList();
        if (context.Coverage.MessageCount > 0 && context.Coverage.MessagesTo != context.Coverage.MessageCount)
        {
            var latest = (await conversations.ReadLatestAsync(tenantId, conversationId, 1, cancellationToken: cancellationToken)).Single();
            verbatim.Add((latest.Sequence, latest.Role, latest.Content));
        }

        messages.AddRange(verbatim.Select(m => new ChatMessage(Role(m.Role), m.Content)));
        return new ChatContext(messages, context.Summary?.ToSequence, verbatim.Count, systemTokens + context.TotalTokens);
    }

    private static ChatRole Role(MessageRole role) => role switch
    {
        MessageRole.User => ChatRole.User,
        MessageRole.Assistant => ChatRole.Assistant,
        MessageRole.System => ChatRole.System,
        _ => ChatRole.User,
    };
}
