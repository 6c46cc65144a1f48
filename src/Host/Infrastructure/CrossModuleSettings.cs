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
    /// after every tool has run; a batch too small for one call refuses the start (<see cref="RoomForOneToolCall"/>).
    /// </summary>
    public static IServiceCollection AddCrossModuleSettings(this IServiceCollection services)
    {
        services.AddSingleton<IValidateOptions<ChatTurnOptions>, RoomForOneToolCall>();
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
            if (batch >= RoomForOneToolCall.MinBatchSize)
            {
                chat.MaxToolCalls = Math.Min(chat.MaxToolCalls, (batch - 1) / 2); // a call and its result each, and the answer
            }
        });
        return services;
    }

    /// <summary>
    /// Refuses a <c>Conversations:MaxBatchSize</c> in which a chat turn cannot store one tool call with its result and the
    /// answer: <c>Chat:MaxToolCalls</c> would be taken as 0, and the start was refused naming only that setting, as if it
    /// had been set to 0.
    /// </summary>
    private sealed class RoomForOneToolCall(IOptions<ConversationsOptions> conversations) : IValidateOptions<ChatTurnOptions>
    {
        /// <summary>One tool call, its result and the answer.</summary>
        public const int MinBatchSize = 3;

        public ValidateOptionsResult Validate(string? name, ChatTurnOptions options)
        {
            int batch;
            try
            {
                batch = conversations.Value.MaxBatchSize;
            }
            catch (OptionsValidationException)
            {
                return ValidateOptionsResult.Skip; // the Conversations settings are refused at start on their own, once
            }

            return batch >= MinBatchSize
                ? ValidateOptionsResult.Success
                : ValidateOptionsResult.Fail(
                    $"Configuration 'Conversations:MaxBatchSize' must be at least {MinBatchSize} for chat to run a tool (was {batch}): a chat " +
                    "turn stores each tool call and its result, then the answer, in one append of at most that many messages, so " +
                    "Chat:MaxToolCalls (taken as at most (Conversations:MaxBatchSize - 1) / 2) would be 0.");
        }
    }
}
