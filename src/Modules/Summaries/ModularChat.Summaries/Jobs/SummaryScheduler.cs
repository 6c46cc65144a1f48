using Marten;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Jobs;

/// <summary>A job the scheduler asks for, now or (after the minimum interval) at <paramref name="NotBefore"/>.</summary>
public sealed record ScheduledJob(SummarizeConversation Job, DateTimeOffset? NotBefore);

/// <summary>
/// Follows a tenant's message events cheaply: one pass over a batch updates each conversation's
/// <see cref="ConversationActivity"/> and asks for a <see cref="SummarizeConversation"/> job only when the strategy says a
/// summary is due and none is pending. Nothing slow happens here.
/// </summary>
public sealed class SummaryScheduler(SummarySettingsResolver settingsResolver, TimeProvider clock)
{
    public async Task<IReadOnlyList<ScheduledJob>> TrackAsync(
        IReadOnlyList<MessageAppended> messages, IDocumentOperations operations, string tenantId, CancellationToken cancellationToken)
    {
        var jobs = new List<ScheduledJob>();
        var byConversation = messages.GroupBy(m => m.ConversationId).ToList();
        var ids = byConversation.Select(g => g.Key).ToArray();

        var reads = operations.CreateBatchQuery();
        var activitiesRead = reads.LoadMany<ConversationActivity>().ById(ids);
        var progressRead = reads.LoadMany<SummaryProgress>().ById(ids);
        await reads.Execute(cancellationToken);
        var activities = (await activitiesRead).ToDictionary(a => a.Id);
        var progress = (await progressRead).ToDictionary(p => p.Id);

        var settings = settingsResolver.For(tenantId);
        var now = clock.GetUtcNow();
        foreach (var events in byConversation)
        {
            var id = events.Key;
            var activity = activities.GetValueOrDefault(id) ?? new ConversationActivity { Id = id };
            foreach (var e in events)
            {
                activity.LastSequence = Math.Max(activity.LastSequence, e.Sequence);
                activity.TotalTokens += e.TokenCount;
                if (e.AppendedAt > activity.LastAppendedAt)
                {
                    activity.LastAppendedAt = e.AppendedAt;
                }
            }

            var p = progress.GetValueOrDefault(id);
            var covered = p?.CoveredTo ?? 0;
            var state = new SummaryState(activity.LastSequence, covered, Math.Max(0, activity.TotalTokens - (p?.CoveredTokens ?? 0)), p?.RevisedAt);
            var decision = SummaryStrategy.Decide(state, settings.Strategy, now);
            // A job scheduled to start later will read every message there is by then: no need for another. A job that may
            // already be running might not see these messages, so another is queued; jobs of a conversation run one after
            // the other and each re-checks the strategy first, so a surplus one is a cheap no-op.
            var scheduledLater = activity.PendingUpTo > covered && activity.PendingAt > now;
            if (decision.Due && !scheduledLater)
            {
                // Lag is measured from the earliest message of this batch: the summary is due because of it or a later one.
                jobs.Add(new ScheduledJob(new SummarizeConversation(id, activity.LastSequence, decision.Reason!, events.Min(e => e.AppendedAt)), decision.NotBefore));
                activity.PendingUpTo = activity.LastSequence;
                activity.PendingAt = decision.NotBefore ?? now;
            }

            operations.Store(activity);
        }

        return jobs;
    }
}
