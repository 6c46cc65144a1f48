using Marten;
using Microsoft.Extensions.Options;
using Wolverine;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Summaries.Contracts;

namespace ModularChat.Conversations.Features.Retention;

/// <summary>Apply the retention policy to one conversation (tenant on the envelope). Durable and retried.</summary>
/// <param name="WaitingSince">Set on a run rescheduled while its step waits for the asynchronous projections: since when.</param>
/// <param name="Attempt">How many times the step has been rescheduled so (the pause grows with it).</param>
public sealed record ApplyRetention(Guid ConversationId, DateTimeOffset? WaitingSince = null, int Attempt = 0);

/// <summary>Every stored summary revision may allow retention to go further (nothing is queued under keep-all).</summary>
public static class RetentionAfterSummaryHandler
{
    public static ApplyRetention? Handle(SummaryRevised revised, Envelope envelope, IOptionsMonitor<RetentionOptions> options)
        => envelope.TenantId is { } tenant && options.CurrentValue.For(tenant).Action is null ? null : new ApplyRetention(revised.ConversationId);
}

/// <summary>
/// Runs retention off the request path, on Wolverine's durable local queue. When the conversation moved on while a run
/// worked without its lock (appends, another node's retention) and the policy allows another step, it queues itself again,
/// in the step's own transaction: the executor commits the step itself (its cache invalidation must follow the commit),
/// and Wolverine drops a message cascaded from a handler whose session has already committed. A failure other than the
/// database away is retried three times, then the message goes to the dead-letter store, reported by
/// <see cref="RetentionDeadLetters"/> (<see cref="ReportedDeadLetters.RetryOtherFailures"/>).
/// </summary>
public static class ApplyRetentionHandler
{
    public static async Task Handle(
        ApplyRetention command, IDocumentSession session, IMessageContext context, RetentionExecutor executor, TimeProvider clock,
        CancellationToken cancellationToken)
    {
        var waitingSince = command.WaitingSince ?? clock.GetUtcNow();
        var outcome = await executor.ApplyAsync(
            session, command.ConversationId, cancellationToken, () => context.PublishAsync(new ApplyRetention(command.ConversationId)), waitingSince);
        if (outcome.WaitsForProjections)
        {
            // Nothing was changed: the session commits only this, through the outbox.
            await context.ScheduleAsync(command with { WaitingSince = waitingSince, Attempt = command.Attempt + 1 }, DaemonProgress.RecheckDelay(command.Attempt));
        }
    }
}
