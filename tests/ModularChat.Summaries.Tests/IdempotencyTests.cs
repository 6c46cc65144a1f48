using Alba;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Summaries.Jobs;
using Wolverine;
using Wolverine.Tracking;

namespace ModularChat.Summaries.Tests;

/// <summary>Retries, duplicates and several nodes never write two revisions for the same range.</summary>
[Collection(AppCollection.Name)]
public sealed class IdempotencyTests(SummariesApp app)
{
    [Fact]
    public async Task Duplicate_jobs_for_the_same_range_write_one_revision()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 4));
        var job = new SummarizeConversation(id, 4, "manual");

        await app.Host.TrackActivity().Timeout(TimeSpan.FromSeconds(60)).ExecuteAndWaitAsync((Func<IMessageContext, Task>)(async bus =>
        {
            for (var i = 0; i < 5; i++)
            {
                await bus.PublishAsync(job, new DeliveryOptions { TenantId = tenant });
            }
        }));

        var history = await client.History(id);
        Assert.Equal((1, 4L), (history.Single().Revision, history.Single().ToSequence));
    }

    [Fact]
    public async Task A_job_whose_range_is_already_summarized_does_nothing()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 10));
        await client.SummaryCovering(id, 10);

        var bus = app.Host.Services.GetRequiredService<IMessageBus>();
        await bus.InvokeForTenantAsync(tenant, new SummarizeConversation(id, 10, "milestone:10"));
        await bus.InvokeForTenantAsync(tenant, new SummarizeConversation(id, 7, "manual"));

        Assert.Single(await client.History(id));
    }

    [Fact]
    public async Task Two_nodes_running_the_same_job_at_once_write_one_revision()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        await client.AppendBatch(id, Api.Turns(1, 6));
        await using var otherNode = await app.StartHostAsync();
        var job = new SummarizeConversation(id, 6, "manual");

        var runs = new[] { app.Host, otherNode }.SelectMany(host => Enumerable.Range(0, 2).Select(_ => Run(host))).ToArray();
        await Task.WhenAll(runs);

        var history = await client.History(id);
        Assert.Equal((1, 6L), (history.Single().Revision, history.Single().ToSequence));

        async Task Run(IAlbaHost host)
        {
            var bus = host.Services.GetRequiredService<IMessageBus>();
            try
            {
                await bus.InvokeForTenantAsync(tenant, job);
            }
            catch (Exception e) when (e is JasperFx.ConcurrencyException or Marten.Exceptions.ExistingStreamIdCollisionException)
            {
                // The loser of the race may give up after its immediate retries: what matters is what was stored.
            }
        }
    }
}
