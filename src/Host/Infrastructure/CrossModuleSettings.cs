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
    /// <c>Chat:MaxStoredToolResultLength</c> are therefore taken as at most that limit.
    /// </summary>
    public static IServiceCollection AddCrossModuleSettings(this IServiceCollection services)
    {
        services.AddOptions<ChatTurnOptions>().PostConfigure<IOptions<ConversationsOptions>>((chat, conversations) =>
        {
            int max;
            try
            {
                max = conversations.Value.MaxContentLength;
            }
            catch (OptionsValidationException)
            {
                return; // the Conversations settings are refused at start on their own, once
            }

            chat.MaxContentLength = Math.Min(chat.MaxContentLength, max);
            chat.MaxStoredToolResultLength = Math.Min(chat.MaxStoredToolResultLength, max);
        });
        return services;
    }
}
