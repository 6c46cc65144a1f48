using JasperFx.Events;
using JasperFx.Events.Daemon;
using JasperFx.Events.Projections;
using Marten;
using Microsoft.Extensions.Options;
using ModularChat.Conversations.Contracts;
using Wolverine;
using Wolverine.Marten.Subscriptions;

namespace ModularChat.Summaries.Jobs;

/// <summary>
/// How the module follows conversations (ADR 0003): a Wolverine-managed subscription to the event store reads the committed
/// <see cref="MessageAppended"/> and <see cref="ConversationDeleted"/> events in pages, in order, on one node at a time. An
/// append and its event commit together (the event is the notice); nothing is written per append for this module, and each
/// page is one transaction that updates the activity read model, removes deleted conversations' summaries and queues the
/// due jobs on the durable local job queue through the Marten outbox, together with the subscription's progress.
/// </summary>
public sealed class SummariesEventSubscription : BatchSubscription
{
    public const string Name = "Summaries";

    private readonly SummaryScheduler _scheduler;
    private readonly SummaryFailures _failures;

    public SummariesEventSubscription(SummaryScheduler scheduler, SummaryFailures failures, IOptions<SummariesOptions> options)
        : base(Name)
    {
        _scheduler = scheduler;
        _failures = failures;
        // Deletions are always followed; message events only when automatic summaries are on.
        IncludeType<ConversationDeleted>();
        if (options.Value.Enabled)
        {
            IncludeType<MessageAppended>();
        }

        Options.BatchSize = options.Value.EventBatchSize;
    }

    public override async Task ProcessEventsAsync(
        EventRange page, ISubscriptionController controller, IDocumentOperations operations, IMessageBus bus, CancellationToken cancellationToken)
    {
        foreach (var tenant in page.Events.GroupBy(e => e.TenantId))
        {
            var tenantOperations = operations.ForTenant(tenant.Key);
            var appended = new List<MessageAppended>();
            foreach (var e in tenant)
            {
                switch (e)
                {
                    case IEvent<MessageAppended> message:
                        appended.Add(message.Data);
                        break;
                    case IEvent<ConversationDeleted> deleted:
                        // Events are in order: whatever this page said of the conversation before its deletion is dropped.
                        appended.RemoveAll(m => m.ConversationId == deleted.Data.ConversationId);
                        await SummaryCleanupHandler.RemoveAsync(tenantOperations, tenant.Key, _failures, deleted.Data.ConversationId, cancellationToken);
                        break;
                }
            }

            if (appended.Count == 0)
            {
                continue;
            }

            var delivery = new DeliveryOptions { TenantId = tenant.Key };
            foreach (var (job, notBefore) in await _scheduler.TrackAsync(appended, tenantOperations, tenant.Key, cancellationToken))
            {
                if (notBefore is { } at)
                {
                    await bus.ScheduleAsync(job, at, delivery);
                }
                else
                {
                    await bus.PublishAsync(job, delivery);
                }
            }
        }
    }
}
