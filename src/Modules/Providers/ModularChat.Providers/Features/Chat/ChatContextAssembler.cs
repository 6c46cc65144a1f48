using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Contracts;

namespace ModularChat.Providers.Features.Chat;

/// <summary>What the model is given for a turn, and how much of the conversation it covers.</summary>
/// <param name="SummaryThroughSequence">The last sequence the summary covers, when a summary was used.</param>
/// <param name="MessageCount">Conversation messages included verbatim.</param>
/// <param name="Tokens">o200k tokens of the whole context.</param>
internal sealed record ChatContext(IReadOnlyList<ChatMessage> Messages, long? SummaryThroughSequence, int MessageCount, int Tokens);

/// <summary>
/// Assembles a turn's context: system prompt, the conversation's current summary (when the Summaries module is
/// present and has one), then the most recent messages after it, newest first until the model's token budget is
/// spent. The latest message (the user's new one) is always included. Tool calls and results of earlier turns are
/// left out: the assistant's answers carry their outcome, and a cut call/result pair would be refused by providers.
/// One small class on purpose: the context contract of the Retention issue replaces it.
/// </summary>
internal sealed class ChatContextAssembler(IConversationMessages conversations, IServiceProvider services, ITokenCounter tokens, IOptionsMonitor<ChatTurnOptions> options)
{
    public async Task<ChatContext> AssembleAsync(string tenantId, Guid conversationId, string model, CancellationToken cancellationToken)
    {
        var settings = options.CurrentValue;
        var budget = settings.BudgetFor(model);
        var context = new List<ChatMessage>();
        var used = 0;
        if (!string.IsNullOrWhiteSpace(settings.SystemPrompt))
        {
            context.Add(new ChatMessage(ChatRole.System, settings.SystemPrompt));
            used += tokens.Count(settings.SystemPrompt);
        }

        var summary = services.GetService<IConversationSummaries>() is { } summaries
            ? await summaries.GetCurrentAsync(tenantId, conversationId, cancellationToken)
            : null;
        if (summary is not null)
        {
            var text = "Summary of the conversation so far (messages 1 to " + summary.ToSequence + "):\n" + summary.Text;
            context.Add(new ChatMessage(ChatRole.System, text));
            used += summary.TokenCount > 0 ? summary.TokenCount : tokens.Count(text);
        }

        var latest = await conversations.ReadLatestAsync(tenantId, conversationId, settings.MaxContextMessages, cancellationToken: cancellationToken);
        var recent = new List<ConversationMessage>();
        foreach (var message in latest.Reverse())
        {
            if (summary is not null && message.Sequence <= summary.ToSequence)
            {
                break;
            }

            if (message.Role == MessageRole.Tool)
            {
                continue;
            }

            if (recent.Count > 0 && used + message.TokenCount > budget)
            {
                break;
            }

            used += message.TokenCount;
            recent.Add(message);
        }

        recent.Reverse();
        context.AddRange(recent.Select(m => new ChatMessage(Role(m.Role), m.Content)));
        return new ChatContext(context, summary?.ToSequence, recent.Count, used);
    }

    private static ChatRole Role(MessageRole role) => role switch
    {
        MessageRole.User => ChatRole.User,
        MessageRole.Assistant => ChatRole.Assistant,
        MessageRole.System => ChatRole.System,
        _ => ChatRole.User,
    };
}
