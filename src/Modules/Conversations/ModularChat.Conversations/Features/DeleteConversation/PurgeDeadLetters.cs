using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Features.DeleteConversation;

/// <summary>
/// The purge of a deleted conversation's event stream dead-lettered, by <see cref="DatabaseOutages"/> (database errors while
/// the database answered) or after the retries of any other failure (<see cref="ReportedDeadLetters.RetryOtherFailures"/>), at its start (<see cref="ConversationDeleted"/>, in <see cref="PurgeDeletedConversationHandler"/>'s
/// queue) or at a re-check (<see cref="PurgeDeletedConversation"/>): one error naming the tenant and the conversation,
/// saying that its events stay in the database, which nothing else removes, counted as <c>work=purge</c>.
/// </summary>
internal static partial class PurgeDeadLetters
{
    /// <summary>The report of the deletion event in the purge's queue (Search and Summaries have their own for theirs).</summary>
    internal sealed class OnDeletion(ConversationsMetrics metrics, ILogger<PurgeDeletedConversation> logger)
        : DeadLetterReport<ConversationDeleted>(typeof(PurgeDeletedConversationHandler))
    {
        protected override void Report(ConversationDeleted message, string tenantId, Exception exception)
            => Log(metrics, logger, message.ConversationId, tenantId, exception);
    }

    /// <summary>The report of a purge re-checking whether the daemon has read the stream.</summary>
    internal sealed class OnRecheck(ConversationsMetrics metrics, ILogger<PurgeDeletedConversation> logger)
        : DeadLetterReport<PurgeDeletedConversation>
    {
        protected override void Report(PurgeDeletedConversation message, string tenantId, Exception exception)
            => Log(metrics, logger, message.ConversationId, tenantId, exception);
    }

    private static void Log(ConversationsMetrics metrics, ILogger logger, Guid conversationId, string tenantId, Exception exception)
    {
        metrics.BackgroundFailed("purge", exception.GetType().Name);
        LogDeadLettered(logger, exception, conversationId, tenantId, exception.Message);
    }

    [LoggerMessage(Level = LogLevel.Error,
        Message = "Purging the event stream of deleted conversation {ConversationId} of tenant {TenantId} kept failing and is dead-lettered: " +
                  "the conversation's events stay in the database (nothing else removes them); replaying the dead letter purges them: {Error}")]
    private static partial void LogDeadLettered(ILogger logger, Exception exception, Guid conversationId, string tenantId, string error);
}
