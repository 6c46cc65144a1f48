using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Search.Projection;

/// <summary>
/// A clean-up of <see cref="SearchCleanupHandler"/> dead-lettered, by <see cref="DatabaseOutages"/> (database errors while
/// the database answered) or after the retries of any other failure (<see cref="ReportedDeadLetters.RetryOtherFailures"/>):
/// one error naming the tenant and the conversation, saying which search entries remain and what takes them out, counted by its event. The search projection applies the same removals when it reads the event: it does
/// for a deletion as long as the conversation's stream is not purged first (the purge waits for it, at most
/// Conversations:PurgeMaxWait), and for a retention step (the step's event stays in the stream).
/// </summary>
internal static partial class SearchCleanupDeadLetters
{
    /// <summary>The report of the deletion event in the clean-up's queue (Conversations and Summaries have their own for theirs).</summary>
    internal sealed class OnDeletion(SearchMetrics metrics, ILogger<OnDeletion> logger)
        : DeadLetterReport<ConversationDeleted>(typeof(SearchCleanupHandler))
    {
        protected override void Report(ConversationDeleted message, string tenantId, Exception exception)
        {
            metrics.CleanupFailed("deletion", exception.GetType().Name);
            LogDeletion(logger, exception, message.ConversationId, tenantId, exception.Message);
        }
    }

    /// <summary>The report of a retention step's removal of deleted messages.</summary>
    internal sealed class OnRetention(SearchMetrics metrics, ILogger<OnRetention> logger) : DeadLetterReport<RetentionApplied>
    {
        protected override void Report(RetentionApplied message, string tenantId, Exception exception)
        {
            metrics.CleanupFailed("retention", exception.GetType().Name);
            LogRetention(logger, exception, message.ConversationId, tenantId, message.FromSequence, message.ToSequence, exception.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Error,
        Message = "Removing the search entries of deleted conversation {ConversationId} of tenant {TenantId} kept failing and is dead-lettered: " +
                  "search entries of a deleted conversation remain until search indexing reads the deletion (it removes them too, unless the stream was purged " +
                  "first, after Conversations:PurgeMaxWait); replaying the dead letter removes them now: {Error}")]
    private static partial void LogDeletion(ILogger logger, Exception exception, Guid conversationId, string tenantId, string error);

    [LoggerMessage(Level = LogLevel.Error,
        Message = "Removing the search entries of messages {FromSequence}-{ToSequence} of conversation {ConversationId} of tenant {TenantId}, deleted by retention, " +
                  "kept failing and is dead-lettered: they remain searchable until search indexing reads the retention step " +
                  "(it removes them too); replaying the dead letter removes them now: {Error}")]
    private static partial void LogRetention(
        ILogger logger, Exception exception, Guid conversationId, string tenantId, long fromSequence, long toSequence, string error);
}
