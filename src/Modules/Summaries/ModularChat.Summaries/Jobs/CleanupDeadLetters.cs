using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Summaries.Jobs;

/// <summary>
/// A clean-up of <see cref="SummaryCleanupHandler"/> dead-lettered, by <see cref="DatabaseOutages"/> (database errors while
/// the database answered) or after the retries of any other failure (<see cref="ReportedDeadLetters.RetryOtherFailures"/>): one error naming the tenant and the conversation, saying what of the deleted conversation stays,
/// counted by its work. Nothing else removes it (the summary sweep follows the conversations that exist): replaying the
/// dead letter does.
/// </summary>
internal static partial class CleanupDeadLetters
{
    /// <summary>The report of the deletion event in the clean-up's queue (Conversations and Search have their own for theirs).</summary>
    internal sealed class OnDeletion(SummariesMetrics metrics, ILogger<OnDeletion> logger)
        : DeadLetterReport<ConversationDeleted>(typeof(SummaryCleanupHandler))
    {
        protected override void Report(ConversationDeleted message, string tenantId, Exception exception)
        {
            metrics.CleanupFailed("deletion", exception.GetType().Name);
            LogRows(logger, exception, message.ConversationId, tenantId, exception.Message);
        }
    }

    /// <summary>The report of the check that a conversation met after the fact still exists (its rows go if it does not).</summary>
    internal sealed class OnVerify(SummariesMetrics metrics, ILogger<OnVerify> logger) : DeadLetterReport<VerifySummarizedConversation>
    {
        protected override void Report(VerifySummarizedConversation message, string tenantId, Exception exception)
        {
            metrics.CleanupFailed("verify", exception.GetType().Name);
            LogVerify(logger, exception, message.ConversationId, tenantId, exception.Message);
        }
    }

    /// <summary>The report of the removal of a deleted conversation's summary stream.</summary>
    internal sealed class OnPurge(SummariesMetrics metrics, ILogger<OnPurge> logger) : DeadLetterReport<PurgeSummaryStream>
    {
        protected override void Report(PurgeSummaryStream message, string tenantId, Exception exception)
        {
            metrics.CleanupFailed("purge", exception.GetType().Name);
            LogPurge(logger, exception, message.ConversationId, tenantId, exception.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Error,
        Message = "Removing the summaries of deleted conversation {ConversationId} of tenant {TenantId} kept failing and is dead-lettered: " +
                  "its summaries, activity and failed jobs remain and its summary stream is not purged; replaying the dead letter removes them: {Error}")]
    private static partial void LogRows(ILogger logger, Exception exception, Guid conversationId, string tenantId, string error);

    [LoggerMessage(Level = LogLevel.Error,
        Message = "Checking that conversation {ConversationId} of tenant {TenantId} still exists kept failing and is dead-lettered: " +
                  "if it was deleted, its summaries and activity remain; replaying the dead letter checks it again: {Error}")]
    private static partial void LogVerify(ILogger logger, Exception exception, Guid conversationId, string tenantId, string error);

    [LoggerMessage(Level = LogLevel.Error,
        Message = "Purging the summary stream of deleted conversation {ConversationId} of tenant {TenantId} kept failing and is dead-lettered: " +
                  "its summary events remain in the database; replaying the dead letter purges them: {Error}")]
    private static partial void LogPurge(ILogger logger, Exception exception, Guid conversationId, string tenantId, string error);
}
