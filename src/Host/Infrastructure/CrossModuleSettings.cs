using Microsoft.Extensions.Options;
using ModularChat.Conversations;
using ModularChat.Providers;

namespace ModularChat.Host.Infrastructure;

/// <summary>Settings of one module bounded by another's: only the host knows both.</summary>
internal static class CrossModuleSettings
{
    /// <summary>
    /// A chat turn stores the user's message, its tool calls and results and the answer as conversation messages, so
    /// none may be longer than a message may be (<c>Conversations:MaxContentLength</c>): one longer would be refused after
    /// the model was paid for, and the whole turn with it. <c>Chat:MaxContentLength</c> and
    /// <c>Chat:MaxStoredToolResultLength</c> are therefore taken as at most that limit. The turn stores its tool calls,
    /// their results and the answer in one append, which holds at most <c>Conversations:MaxBatchSize</c> messages:
    /// <c>Chat:MaxToolCalls</c> is taken as at most (that - 1) / 2, so that a turn's own store is never refused for its size
    /// after every tool has run.
    /// </summary>
    public static IServiceCollection AddCrossModuleSettings(this IServiceCollection services)
    {
        services.AddOptions<ChatTurnOptions>().PostConfigure<IOptions<ConversationsOptions>>((chat, conversations) =>
        {
            int max, batch;
            try
            {
                (max, batch) = (conversations.Value.MaxContentLength, conversations.Value.MaxBatchSize);
            }
            catch (OptionsValidationException)
            {
                return; // the Conversations settings are refused at start on their own, once
            }

            chat.MaxContentLength = Math.Min(chat.MaxContentLength, max);
            chat.MaxStoredToolResultLength = Math.Min(chat.MaxStoredToolResultLength, max);
            chat.MaxToolCalls = Math.Min(chat.MaxToolCalls, (batch - 1) / 2); // a call and its result each, and the answer
        });
        return services;
    }
}
