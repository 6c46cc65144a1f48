using System.Collections.Concurrent;
using System.Reflection;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ModularChat.Summaries.Jobs;
using ModularChat.Testing.Fakes;
using Wolverine;
using Wolverine.Runtime;

namespace ModularChat.Summaries.Tests;

/// <summary>
/// A host on a database of its own (a job put off is rescheduled in the inbox, where another test node on a shared database
/// would pick it up and run it on its own share) with the default job slots (3) and tenant share (2). The slow tenant's
/// summaries go to a model on loopback that the test holds back; other tenants' are extractive.
/// </summary>
public sealed class SummariesShareApp() : ModularChatApp(TestDatabase("summaries_share"))
{
    /// <summary>The tenant whose summaries the model holds back.</summary>
    public string SlowTenant { get; } = NewUser("slow");

    public FakeOpenAiServer Llm { get; private set; } = null!;

    /// <summary>What the host logs (the summary writer's Debug entries too: a job put off for its tenant's share says so).</summary>
    public CapturedLogs Logs { get; } = new();

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Summaries:MinInterval"] = "00:00:00",
        ["Summaries:EventBatchWindow"] = "00:00:00.050",
        ["Summaries:Sweep:Interval"] = "00:00:00",
        ["Summaries:TenantShareRecheck"] = "00:00:00.500",
        ["Summaries:Llm:Endpoint"] = Llm.BaseUrl.ToString(),
        ["Summaries:Llm:ApiKey"] = "slow-key",
        ["Summaries:Llm:Model"] = "slow-model",
        ["Summaries:Llm:Timeout"] = "00:10:00", // held for as long as the test needs, never timed out
        ["Summaries:Variants:slow:Summarizer"] = "llm",
        [$"Summaries:TenantVariants:{SlowTenant}"] = "slow",
        ["OutboundNetwork:AllowPrivateNetworks"] = "true",
        ["Logging:LogLevel:ModularChat.Summaries.Jobs.SummaryWriter"] = "Debug",
    };

    protected override void ConfigureServices(IServiceCollection services)
        => services.AddSingleton<Microsoft.Extensions.Logging.ILoggerProvider>(Logs);

    public override async Task InitializeAsync()
    {
        Llm = await FakeOpenAiServer.StartAsync();
        Llm.RequiredApiKey = null;
        await base.InitializeAsync();
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Llm.DisposeAsync();
    }

    /// <summary>The job slots of the host (<c>Summaries:JobParallelism</c>, 3: Wolverine's smallest number of partitions).</summary>
    public int Slots => Host.Services.GetRequiredService<IOptions<SummariesOptions>>().Value.JobParallelism;

    /// <summary>
    /// The slot in which the host runs the summary jobs of <paramref name="conversation"/>: Wolverine's own choice
    /// (<c>PartitionedMessagingExtensions.SlotForProcessing</c>, internal: a hash of the group id, here the conversation id,
    /// modulo the slots), called on the host's partitioning rules.
    /// </summary>
    public int Slot(Guid conversation)
    {
        var rules = Host.Services.GetRequiredService<IWolverineRuntime>().Options.MessagePartitioning;
        return (int)SlotForProcessing.Invoke(null, [new Envelope(new SummarizeConversation(conversation, 10, "milestone:10")), Slots, rules])!;
    }

    private static readonly MethodInfo SlotForProcessing =
        typeof(Envelope).Assembly.GetType("Wolverine.Runtime.Partitioning.PartitionedMessagingExtensions", throwOnError: true)!
            .GetMethod("SlotForProcessing", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static)
        ?? throw new InvalidOperationException("Wolverine no longer has PartitionedMessagingExtensions.SlotForProcessing: find how it places a group id now");
}

/// <summary>
/// A tenant whose model is slow (or that has many summaries due) runs at most <c>Summaries:MaxJobsPerTenant</c> jobs at once on
/// a node; its other jobs put themselves off, so other tenants' summaries are not queued behind all of its jobs.
/// </summary>
public sealed class TenantShareTests(SummariesShareApp app) : IClassFixture<SummariesShareApp>
{
    [Fact]
    public async Task A_tenant_whose_model_holds_its_jobs_leaves_a_slot_to_other_tenants_and_loses_no_summary()
    {
        using var slow = app.Client(app.SlowTenant);
        using var fast = app.Client(ModularChatApp.NewUser("fast"));
        var model = await HoldBackAsync(slow);
        try
        {
            await model.ReachedAsync(Share);

            // The other tenant's conversation goes to a slot where none of the slow tenant's held jobs runs (behind a running
            // job a slot waits, share or not). When they run in every slot (no share), any slot does.
            var held = model.Calls.Select(app.Slot).ToHashSet();
            Guid quick;
            do
            {
                quick = await fast.NewConversation("fast");
            }
            while (held.Contains(app.Slot(quick)) && held.Count < app.Slots);

            await fast.AppendBatch(quick, Api.Turns(1, 10));
            var summary = await fast.SummaryCovering(quick, 10);

            // Written while the slow tenant's model still holds its calls: the slow tenant ran its share at once, no more
            // (alone on a node it would too), and put its other jobs off.
            Assert.Equal("milestone:10", summary.Reason);
            Assert.All(model.Gates.Values, gate => Assert.False(gate.Task.IsCompleted));
            Assert.Equal(Share, model.Calls.Count);
            Assert.NotEmpty(model.PutOff());
        }
        finally
        {
            model.ReleaseAll();
        }

        await AllSummarizedOnceAsync(slow, model);
    }

    [Fact]
    public async Task Another_tenants_job_queued_behind_a_slow_tenants_running_job_waits_for_that_one_only()
    {
        using var slow = app.Client(app.SlowTenant);
        using var fast = app.Client(ModularChatApp.NewUser("fast"));
        var model = await HoldBackAsync(slow);
        try
        {
            await model.ReachedAsync(Share);

            // One of the slow tenant's running jobs, the slow tenant's other job queued behind it in its slot, and, once the
            // slow tenant's jobs in the slot it does not hold have been put off, another tenant's job behind both.
            var first = model.Calls.First();
            var slot = app.Slot(first);
            var behind = model.Conversations.Single(c => c.Id != first && app.Slot(c.Id) == slot).Id;
            await Eventually.Until(() => Task.FromResult(model.PutOff().Count), n => n > 0, Eventually.BackgroundSeconds,
                "None of the slow tenant's jobs was put off");
            Guid quick;
            do
            {
                quick = await fast.NewConversation("fast");
            }
            while (app.Slot(quick) != slot);

            await fast.AppendBatch(quick, Api.Turns(1, 10));

            // The running job ends just after one of the slow tenant's jobs was put off again (so it is due back soon)...
            var deferrals = model.Deferrals();
            await Eventually.Until(() => Task.FromResult(model.Deferrals()), n => n > deferrals, Eventually.BackgroundSeconds,
                "The slow tenant's jobs put off did not come back");
            model.Gates[first].SetResult();

            // ...and the other tenant's job runs next in that slot: the slow tenant's job queued before it gives its place to
            // the slow tenant's jobs put off before (they go first, oldest first) and puts itself off.
            var summary = await fast.SummaryCovering(quick, 10);
            Assert.Equal("milestone:10", summary.Reason);
            Assert.DoesNotContain(behind, model.Calls);
            Assert.Contains(behind, model.PutOff());
        }
        finally
        {
            model.ReleaseAll();
        }

        await AllSummarizedOnceAsync(slow, model);
    }

    private int Share => app.Host.Services.GetRequiredService<TenantJobShares>().Share;

    /// <summary>
    /// Two new conversations of the slow tenant in each slot (without a share its held jobs would take every slot: another
    /// tenant's job would wait behind one of them wherever it went), whose model calls are held until released; each
    /// reaches its first milestone.
    /// </summary>
    private async Task<HeldModel> HoldBackAsync(HttpClient slow)
    {
        Assert.Equal(app.Slots - 1, Share);
        var conversations = new List<(Guid Id, string Topic)>();
        var perSlot = new int[app.Slots];
        while (conversations.Count < 2 * app.Slots)
        {
            var id = await slow.NewConversation("slow");
            if (perSlot[app.Slot(id)]++ < 2)
            {
                conversations.Add((id, $"topic{Guid.NewGuid():N}x"));
            }
        }

        var model = new HeldModel(app, conversations);
        app.Llm.Responder = model.Answer;
        foreach (var (id, topic) in conversations)
        {
            await slow.AppendBatch(id, Api.Turns(1, 10, topic));
        }

        return model;
    }

    /// <summary>
    /// Released, every conversation of the slow tenant is summarized: its jobs were put off, none was lost, and each called the
    /// model once (a job put off reads nothing and calls nothing until it runs); none is left queued or scheduled.
    /// </summary>
    private async Task AllSummarizedOnceAsync(HttpClient slow, HeldModel model)
    {
        foreach (var (id, _) in model.Conversations)
        {
            Assert.Equal(10, (await slow.SummaryCovering(id, 10)).ToSequence);
        }

        Assert.Equal(model.Conversations.Select(c => c.Id).Order(), model.Calls.Order());
        await Eventually.Until(() => app.PendingEnvelopesAbout(model.Conversations.Select(c => c.Id)), n => n == 0, Eventually.BackgroundSeconds,
            "Jobs of the slow tenant are still queued or scheduled");

        // A job put off moved its conversation's pending mark to when it looks again (a sweep does not take it for lost, appends
        // meanwhile queue no second job), and the activity reads back as the module stores it.
        var putOff = model.PutOff();
        Assert.NotEmpty(putOff);
        await using var session = app.Host.Services.GetRequiredService<Marten.IDocumentStore>().QuerySession(app.SlowTenant);
        foreach (var activity in await session.LoadManyAsync<Domain.ConversationActivity>(putOff))
        {
            Assert.Equal(0, activity.PendingUpTo); // cleared by the revision that covered it
            Assert.True(activity.PendingAt >= activity.LastAppendedAt + TimeSpan.FromMilliseconds(500),
                $"pending since {activity.PendingAt:O}, last append {activity.LastAppendedAt:O}");
        }
    }

    /// <summary>The slow tenant's model: records which conversation each call is about and holds it until its gate opens.</summary>
    private sealed class HeldModel(SummariesShareApp app, List<(Guid Id, string Topic)> conversations)
    {
        private readonly ConcurrentQueue<Guid> _calls = new();

        public List<(Guid Id, string Topic)> Conversations => conversations;

        public Dictionary<Guid, TaskCompletionSource> Gates { get; } =
            conversations.ToDictionary(c => c.Id, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));

        /// <summary>The conversations whose summaries called the model, in the order of the calls.</summary>
        public List<Guid> Calls => [.. _calls];

        public FakeReply Answer(RecordedRequest request)
        {
            var text = request.Messages.ToJsonString();
            var id = conversations.FirstOrDefault(c => text.Contains(c.Topic, StringComparison.Ordinal)).Id;
            var reply = new FakeReply("Maria and Tomas booked the items of their trip to Lisbon.");
            if (id == Guid.Empty)
            {
                return reply; // another test's, left running by its failure
            }

            _calls.Enqueue(id);
            return reply with { Hold = Gates[id].Task };
        }

        public Task ReachedAsync(int calls)
            => Eventually.Until(() => Task.FromResult(Calls.Count), n => n >= calls, Eventually.BackgroundSeconds, "The slow tenant's summaries did not reach its model");

        /// <summary>How many times the host put off one of these conversations' jobs for the slow tenant's share.</summary>
        public int Deferrals() => app.Logs.Entries.Count(e => conversations.Any(c => IsPutOff(e.Message, c.Id)));

        /// <summary>The conversations whose job was put off at least once.</summary>
        public List<Guid> PutOff() => [.. conversations.Select(c => c.Id).Where(id => app.Logs.Entries.Any(e => IsPutOff(e.Message, id)))];

        public void ReleaseAll()
        {
            foreach (var gate in Gates.Values)
            {
                gate.TrySetResult();
            }
        }

        private bool IsPutOff(string message, Guid id)
            => message.StartsWith($"Summary of conversation {id} of tenant {app.SlowTenant} put off for ", StringComparison.Ordinal);
    }
}
