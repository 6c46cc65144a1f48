using ModularChat.Conversations.Contracts;
using Marten;
using ModularChat.Summaries.Domain;
using Wolverine;

namespace ModularChat.Summaries.Jobs;

/// <summary>
/// Follows appends (the entries of their <see cref="AppendsCommitted"/> notices) cheaply: one transaction per batch of notices and tenant
/// updates each conversation's <see cref="ConversationActivity"/> and, only when the strategy says a summary is due, queues a
/// durable <see cref="SummarizeConversation"/> job in the same transaction. Nothing slow happens here.
/// </summary>
public sealed class SummaryScheduler(SummarySettingsResolver settingsResolver, TimeProvider clock)
{
    public async Task<OutgoingMessages> TrackAsync(IReadOnlyList<AppendCommitted> messages, IDocumentSession session, CancellationToken cancellationToken)
    {
        var outgoing = new OutgoingMessages();
        // In id order: two batches of a tenant (two nodes) that meet the same new conversations insert their rows in one
        // order and cannot deadlock on them (one waits, then conflicts and retries).
        var byConversation = messages.GroupBy(m => m.ConversationId).OrderBy(g => g.Key).ToList();
        var ids = byConversation.Select(g => g.Key).ToArray();

        var reads = session.CreateBatchQuery();
        var activitiesRead = reads.LoadMany<ConversationActivity>().ById(ids);
        var progressRead = reads.LoadMany<SummaryProgress>().ById(ids);
        await reads.Execute(cancellationToken);
        var activities = (await activitiesRead).ToDictionary(a => a.Id);
        var progress = (await progressRead).ToDictionary(p => p.Id);

        var settings = settingsResolver.For(session.TenantId);
        var now = clock.GetUtcNow();
        foreach (var events in byConversation)
        {
            var id = events.Key;
            var isNew = !activities.TryGetValue(id, out var activity);
            activity ??= new ConversationActivity { Id = id };
            foreach (var e in events)
            {
                if (!activity.Count(e.FromSequence, e.ToSequence))
                {
                    // Counted already: the notice was delivered twice (Wolverine delivers at least once), or a sweep counted
                    // these messages from the conversation's own counts before it came.
                    continue;
                }

                activity.LastSequence = Math.Max(activity.LastSequence, e.ToSequence);
                activity.TotalTokens += e.Tokens;
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
                var job = new SummarizeConversation(id, activity.LastSequence, decision.Reason!, events.Min(e => e.AppendedAt));
                outgoing.Add(decision.NotBefore is { } at ? job.ScheduledAt(at) : job);
                activity.PendingUpTo = activity.LastSequence;
                activity.PendingAt = decision.NotBefore ?? now;
            }

            if (isNew)
            {
                // An insert, not an upsert: two nodes meeting a new conversation at once conflict and the batch retries.
                session.Insert(activity);
                outgoing.Add(new VerifySummarizedConversation(id));
            }
            else
            {
                session.Store(activity);
            }
        }

        return outgoing;
    }
}
