using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Messaging;

namespace ModularChat.Conversations.Features.Retention;

/// <summary>
/// A retention step dead-lettered, by <see cref="DatabaseOutages"/> (database errors while the database answered) or after the
/// retries of any other failure (<see cref="ReportedDeadLetters.RetryOtherFailures"/>): one error naming the tenant and the
/// conversation, saying that its messages past the policy stay and what runs it again, counted as <c>work=retention</c>.
/// The generic entries named only the message type and the envelope.
/// </summary>
internal sealed partial class RetentionDeadLetters(ConversationsMetrics metrics, ILogger<RetentionDeadLetters> logger)
    : DeadLetterReport<ApplyRetention>
{
    protected override void Report(ApplyRetention message, string tenantId, Exception exception)
    {
        metrics.BackgroundFailed("retention", exception.GetType().Name);
        LogDeadLettered(logger, exception, message.ConversationId, tenantId, exception.Message);
    }

    [LoggerMessage(Level = LogLevel.Error,
        Message = "Retention of conversation {ConversationId} of tenant {TenantId} kept failing and is dead-lettered: " +
                  "messages past the retention policy were not archived or deleted. The conversation's next summary revision runs retention again, " +
                  "as do POST /api/admin/retention/apply and the retention command; replaying the dead letter does it now: {Error}")]
    private static partial void LogDeadLettered(ILogger logger, Exception exception, Guid conversationId, string tenantId, string error);
}
