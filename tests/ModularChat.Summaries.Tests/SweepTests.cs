using System.Net;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Jobs;
using ModularChat.Summaries.Features.Sweep;
using Wolverine;

namespace ModularChat.Summaries.Tests;

/// <summary>The sweep finds missing and stale summaries from the read model and queues them; --resummarize rebuilds them all.</summary>
[Collection(AppCollection.Name)]
public sealed class SweepTests(SummariesApp app)
{
    private SummarySweep Sweep => app.Host.Services.GetRequiredService<SummarySweep>();

    [Fact]
    public async Task The_sweep_endpoint_queues_a_conversation_whose_summary_went_stale()
    {
        using var client = app.Client(app.PatientTenant);
        var id = await ScheduledAt25TwoHoursAgo(client);
        // The job is lost: the summary is stale and nothing is pending any more.

        using var admin = app.Client(ModularChatApp.NewUser("operator"), null, "operator");
        using var started = await admin.PostJson("/api/admin/summaries/sweep", new { tenant = app.PatientTenant });
        Assert.Equal(HttpStatusCode.Accepted, started.StatusCode);

        var summary = await client.SummaryCovering(id, 25);
        Assert.Equal((2, "milestone:25"), (summary.Revision, summary.Reason));
        var status = await Eventually.Until(
            async () => await (await admin.GetAsync("/api/admin/summaries/sweep")).ReadAs<SweepStatusDto>(HttpStatusCode.OK),
            s => !s.Running && s.Last is { Queued: >= 1 });
        Assert.True(status.Last!.Finished >= 1);
        Assert.False(status.Last.Resummarize);
    }

    [Fact]
    public async Task A_sweep_catches_up_on_appends_whose_notices_were_lost_and_summarizes_what_they_made_due()
    {
        using var client = app.Client(app.PatientTenant);
        // One conversation's notices of messages 11-25 were lost (its activity still says 10, nothing pending, and its
        // summary is two hours old): milestone 25 is due, but nothing in the read model says so.
        var behind = await ScheduledAt25TwoHoursAgo(client);
        var tokens = (await Activity(app.PatientTenant, behind))!.TotalTokens;
        await Rewrite(app.PatientTenant, behind, a =>
        {
            a.LastSequence = 10;
            a.PendingUpTo = 0;
            a.PendingAt = null;
        });
        // Another's activity was never written (its first notice lost): no sweep saw it.
        var unseen = await client.NewConversation();
        await client.AppendEach(unseen, Api.Turns(1, 5));
        await Eventually.Until(() => Activity(app.PatientTenant, unseen), a => a?.LastSequence == 5);
        var unseenTokens = (await Activity(app.PatientTenant, unseen))!.TotalTokens;
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(app.PatientTenant))
        {
            session.Delete<ConversationActivity>(unseen);
            await session.SaveChangesAsync();
        }

        var result = await Sweep.RunAsync(new SweepRequest(TenantId: app.PatientTenant), null, CancellationToken.None);

        var summary = await client.SummaryCovering(behind, 25);
        Assert.Equal((2, "milestone:25"), (summary.Revision, summary.Reason));
        Assert.True(result.Queued >= 1, $"queued {result.Queued}");
        var caughtUp = (await Activity(app.PatientTenant, behind))!;
        Assert.Equal((25L, tokens), (caughtUp.LastSequence, caughtUp.TotalTokens));
        var found = await Activity(app.PatientTenant, unseen);
        Assert.NotNull(found);
        Assert.Equal((5L, unseenTokens), (found.LastSequence, found.TotalTokens));
    }

    [Fact]
    public async Task An_activity_row_a_deleted_conversation_left_behind_goes_with_the_job_a_sweep_queues_for_it()
    {
        var tenant = ModularChatApp.NewUser("orphan");
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 5));
        await Eventually.Until(() => Activity(tenant, id), a => a?.LastSequence == 5);
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{id}")).StatusCode);
        await Eventually.Until(() => Activity(tenant, id), a => a is null);

        // As a notice's batch leaves it when it read the row before the deletion and stored it after: back, with a summary due.
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(tenant))
        {
            session.Store(new ConversationActivity { Id = id, LastSequence = 12, TotalTokens = 300 });
            await session.SaveChangesAsync();
        }

        var result = await Sweep.RunAsync(new SweepRequest(TenantId: tenant), null, CancellationToken.None);

        // The job finds the conversation gone and removes the row: the sweep sees it done instead of waiting Sweep:JobWait.
        Assert.Equal((1L, 1L, 0L), (result.Queued, result.Finished, result.Unfinished));
        Assert.Null(await Activity(tenant, id));
    }

    [Fact]
    public async Task A_job_that_finds_nothing_due_takes_its_conversation_off_the_backlog()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 10));
        await client.SummaryCovering(id, 10);
        await client.AppendEach(id, Api.Turns(11, 11));
        await Eventually.Until(() => Activity(tenant, id), a => a?.LastSequence == 11);

        // As the notice of message 11 leaves it when it comes while the job for 10 is still running: milestone 10 looks
        // due to it, so it queues a job for 11 and marks it pending.
        await Rewrite(tenant, id, a =>
        {
            a.PendingUpTo = 11;
            a.PendingAt = DateTimeOffset.UtcNow;
        });
        var bus = app.Host.Services.GetRequiredService<IMessageBus>();
        await bus.PublishAsync(new SummarizeConversation(id, 11, "milestone:10"), new DeliveryOptions { TenantId = tenant });

        // The job finds nothing due (10 is covered) and clears the mark it was queued with: the conversation waits for nothing.
        await Eventually.Until(() => Activity(tenant, id), a => a?.PendingUpTo == 0, what: "The pending mark stayed above the coverage");
        Assert.Equal(1, (await client.SummaryCovering(id, 10)).Revision);
    }

    [Fact]
    public async Task A_sweep_clears_the_pending_marks_that_summaries_cover_and_leaves_those_above_them()
    {
        var tenant = ModularChatApp.NewUser("marks");
        using var client = app.Client(tenant);
        var left = await client.NewConversation();
        var pending = await client.NewConversation();
        foreach (var id in new[] { left, pending })
        {
            await client.AppendEach(id, Api.Turns(1, 10));
            await client.SummaryCovering(id, 10);
            await Eventually.Until(() => Activity(tenant, id), a => a is { LastSequence: 10, PendingUpTo: 0 }, what: "the mark cleared by the revision");
        }

        await client.AppendEach(pending, Api.Turns(11, 12));
        await Eventually.Until(() => Activity(tenant, pending), a => a?.LastSequence == 12, what: "the activity of messages 11 and 12");

        // One mark at the coverage, as builds before 2026-12-07 left them after a revision; one above it, a job on its way.
        await Rewrite(tenant, left, a => a.PendingUpTo = 10);
        await Rewrite(tenant, pending, a =>
        {
            a.PendingUpTo = 12;
            a.PendingAt = DateTimeOffset.UtcNow;
        });

        var result = await Sweep.RunAsync(new SweepRequest(TenantId: tenant), null, CancellationToken.None);

        Assert.Equal((2L, 0L), (result.Examined, result.Queued));
        Assert.Equal(0, (await Activity(tenant, left))!.PendingUpTo);
        Assert.Equal(12, (await Activity(tenant, pending))!.PendingUpTo);
    }

    [Fact]
    public async Task A_notice_that_arrives_after_a_sweep_counted_its_messages_does_not_count_their_tokens_again()
    {
        using var client = app.Client(app.PatientTenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 5));
        await Eventually.Until(() => Activity(app.PatientTenant, id), a => a?.LastSequence == 5);
        var tokens = (await Activity(app.PatientTenant, id))!.TotalTokens;
        // The notice of messages 4-5 is late: the activity says 3 until it comes, and the sweep catches up first.
        await Rewrite(app.PatientTenant, id, a =>
        {
            a.LastSequence = 3;
            a.TotalTokens = 1;
            a.CountedTo = 3;
        });
        await Sweep.RunAsync(new SweepRequest(TenantId: app.PatientTenant), null, CancellationToken.None);
        var caughtUp = (await Activity(app.PatientTenant, id))!;
        Assert.Equal((5L, tokens), (caughtUp.LastSequence, caughtUp.TotalTokens));

        // The late notice (messages 4-5), and one of a sixth message appended after the sweep.
        var now = DateTimeOffset.UtcNow;
        await Track(app.PatientTenant, new AppendCommitted(id, 4, 5, 2, 17, now), new AppendCommitted(id, 6, 6, 1, 11, now));

        var activity = (await Activity(app.PatientTenant, id))!;
        Assert.Equal((6L, tokens + 11), (activity.LastSequence, activity.TotalTokens));
    }

    [Fact]
    public async Task A_notice_delivered_twice_or_overtaken_by_a_later_one_counts_its_tokens_once()
    {
        using var client = app.Client(app.PatientTenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 2));
        var first = await Eventually.Until(() => Activity(app.PatientTenant, id), a => a?.LastSequence == 2);

        // Through the module's own queue, as Wolverine delivers them: the notice of messages 1-2 again (at-least-once), then
        // those of messages 5 and 3-4 (another node's, overtaking), each twice. Notices of a node are handled in order, so
        // the last one's arrival means all were handled.
        var bus = app.Host.Services.GetRequiredService<IMessageBus>();
        var now = DateTimeOffset.UtcNow;
        foreach (var notice in new[] { (1L, 2L, 1000L), (5, 5, 7), (5, 5, 7), (3, 4, 5), (3, 4, 5), (6, 6, 11) })
        {
            await bus.PublishAsync(
                new AppendsCommitted([new AppendCommitted(id, notice.Item1, notice.Item2, (int)(notice.Item2 - notice.Item1 + 1), notice.Item3, now)]),
                new DeliveryOptions { TenantId = app.PatientTenant });
        }

        var activity = await Eventually.Until(() => Activity(app.PatientTenant, id), a => a?.LastSequence == 6);
        Assert.Equal(first!.TotalTokens + 7 + 5 + 11, activity!.TotalTokens);
        Assert.Equal((6L, 0), (activity.CountedTo, activity.CountedAhead.Count));
    }

    [Fact]
    public async Task A_sweep_counts_the_messages_of_a_notice_lost_between_two_that_came()
    {
        using var client = app.Client(app.PatientTenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 5));
        var tokens = (await Eventually.Until(() => Activity(app.PatientTenant, id), a => a?.LastSequence == 5))!.TotalTokens;
        // The notice of messages 3-4 never came; those of 1-2 and 5 did: the activity is at the last message, with a gap.
        await Rewrite(app.PatientTenant, id, a =>
        {
            a.TotalTokens = 20;
            a.CountedTo = 2;
            a.CountedAhead = [new CountedRange(5, 5)];
        });

        await Sweep.RunAsync(new SweepRequest(TenantId: app.PatientTenant), null, CancellationToken.None);

        var activity = (await Activity(app.PatientTenant, id))!;
        Assert.Equal((5L, tokens, 5L, 0), (activity.LastSequence, activity.TotalTokens, activity.CountedTo, activity.CountedAhead.Count));
    }

    [Fact]
    public async Task A_sweep_counts_the_messages_of_a_gap_given_up_when_notices_left_too_many_gaps()
    {
        using var client = app.Client(app.PatientTenant);
        var id = await client.NewConversation();
        await client.AppendBatch(id, Api.Turns(1, 36));
        var tokens = (await Eventually.Until(() => Activity(app.PatientTenant, id), a => a?.LastSequence == 36))!.TotalTokens;
        // As if only message 1's notice had come, then those of every odd message from 3 (one token each): the 17th gap
        // gives up the lowest (message 2, its notice lost). Then every other gap closes: the row looks complete, 2 missing.
        await Rewrite(app.PatientTenant, id, a =>
        {
            a.TotalTokens = 1;
            a.CountedTo = 1;
            a.CountedAhead = [];
        });
        var now = DateTimeOffset.UtcNow;
        AppendCommitted Notice(long sequence) => new(id, sequence, sequence, 1, 1, now);
        await Track(app.PatientTenant, [.. Enumerable.Range(1, 17).Select(i => Notice(1 + (2 * i)))]);
        await Track(app.PatientTenant, [.. Enumerable.Range(2, 17).Select(i => Notice(2 * i))]);
        var complete = (await Activity(app.PatientTenant, id))!;
        Assert.Equal((36L, 0, 35L), (complete.CountedTo, complete.CountedAhead.Count, complete.TotalTokens));

        await Sweep.RunAsync(new SweepRequest(TenantId: app.PatientTenant), null, CancellationToken.None);

        var activity = (await Activity(app.PatientTenant, id))!;
        Assert.Equal((36L, tokens, 36L, 0L), (activity.LastSequence, activity.TotalTokens, activity.CountedTo, activity.GapGivenUpTo));
    }

    [Theory]
    [InlineData(300, "longer than 256")]
    [InlineData(0, "control characters")]
    public async Task A_sweep_for_a_tenant_id_no_tenant_can_have_answers_400(int length, string why)
    {
        using var admin = app.Client(ModularChatApp.NewUser("operator"), null, "operator");
        var tenant = length > 0 ? new string('t', length) : "acme";
        var problem = await (await admin.PostJson("/api/admin/summaries/sweep", new { tenant })).ShouldBeProblem(400);
        Assert.Contains(why, problem.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Only_the_services_operators_may_sweep()
    {
        // A sweep reaches other tenants (or all): neither a user nor a tenant's administrator may start or watch one.
        foreach (var roles in new[] { Array.Empty<string>(), ["admin"] })
        {
            using var client = app.Client(ModularChatApp.NewUser(), null, roles);
            Assert.Equal(HttpStatusCode.Forbidden, (await client.PostJson("/api/admin/summaries/sweep", new { tenant = app.PatientTenant })).StatusCode);
            Assert.Equal(HttpStatusCode.Forbidden, (await client.GetAsync("/api/admin/summaries/sweep")).StatusCode);
        }
    }

    [Fact]
    public async Task Resummarize_rebuilds_every_summary_from_the_first_message_and_reports_progress()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var ids = new List<Guid>();
        for (var i = 0; i < 3; i++)
        {
            var id = await client.NewConversation();
            await client.AppendEach(id, Api.Turns(1, 12));
            await client.SummaryCovering(id, 10);
            ids.Add(id);
        }

        var reports = new List<SweepProgress>();
        var result = await Sweep.RunAsync(new SweepRequest(Resummarize: true, TenantId: tenant), reports.Add, CancellationToken.None);

        Assert.True(result.Ran);
        Assert.Equal((3L, 3L, 3L, 0L), (result.Examined, result.Queued, result.Finished, result.Unfinished));
        Assert.NotEmpty(reports);
        Assert.Equal(3, reports[^1].Finished);
        foreach (var id in ids)
        {
            var current = (await client.CurrentSummary(id))!;
            Assert.Equal(("resummarize", 1L, 12L), (current.Reason, current.FromSequence, current.ToSequence));
            Assert.Equal(((int?)null, (long?)1), (current.BasedOnRevision, current.ReadFromSequence)); // from the first message
        }
    }

    [Fact]
    public async Task The_summaries_command_reports_progress_while_its_jobs_retry_and_leaves_them_queued_for_the_service()
    {
        var tenant = ModularChatApp.NewUser("sweep-command");
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 12));
        await client.SummaryCovering(id, 10);

        // The command summarizes this tenant with a model where nothing listens: its job fails and waits for its retry.
        var (exit, output) = await app.RunHostCommandAsync(
            new Dictionary<string, string>
            {
                ["Summaries__Sweep__JobWait"] = "00:00:06",
                ["Summaries__Variants__unreachable__Summarizer"] = "llm",
                [$"Summaries__TenantVariants__{tenant}"] = "unreachable",
                ["Summaries__Llm__Endpoint"] = "http://127.0.0.1:9/v1",
                ["Summaries__Llm__ApiKey"] = "unused-key",
                ["Summaries__Llm__Model"] = "unused-model",
                ["OutboundNetwork__AllowPrivateNetworks"] = "true",
            },
            "summaries", "--resummarize", "--tenant", tenant);

        // It used to print nothing until the job's wait was over.
        Assert.True(exit != 0, output);
        // Once when the job is queued, then at least once while it waits (every half of the 6 s wait at most).
        var waiting = output.Split('\n').Count(l => l.Contains("examined 1, queued 1, done 0, waiting for 1, not done in time 0", StringComparison.Ordinal));
        Assert.True(waiting >= 2, output);
        Assert.Contains("1 conversations examined, 1 queued, 0 done, 1 not done in time", output, StringComparison.Ordinal);
        Assert.Contains("stay queued: the service's nodes carry them on", output, StringComparison.Ordinal);

        // This fixture's node carries the job on, with its own settings (no model for this tenant).
        var rebuilt = await Eventually.Until(() => client.CurrentSummary(id), s => s?.Reason == "resummarize",
            seconds: Eventually.BackgroundSeconds, what: "the summary rebuilt by the job the command left queued");
        Assert.Equal((1L, 12L), (rebuilt!.FromSequence, rebuilt.ToSequence));
    }

    [Fact]
    public async Task A_sweep_finds_nothing_to_do_when_every_summary_is_current()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 10));
        await client.SummaryCovering(id, 10);

        var result = await Sweep.RunAsync(new SweepRequest(TenantId: tenant), null, CancellationToken.None);

        Assert.Equal((1L, 0L), (result.Examined, result.Queued));
    }

    [Fact]
    public async Task Only_one_node_sweeps_at_a_time()
    {
        await using var otherNode = await OtherNodesSweep.StartAsync(app.PostgresConnectionString);

        var whileLocked = await Sweep.RunAsync(new SweepRequest(TenantId: "nobody"), null, CancellationToken.None);
        await otherNode.EndAsync();
        var afterwards = await Sweep.RunAsync(new SweepRequest(TenantId: "nobody"), null, CancellationToken.None);

        Assert.False(whileLocked.Ran);
        Assert.True(afterwards.Ran);
    }

    [Fact]
    public async Task A_requested_sweep_waits_for_another_nodes_sweep_and_then_runs()
    {
        await using var otherNode = await OtherNodesSweep.StartAsync(app.PostgresConnectionString);
        using var admin = app.Client(ModularChatApp.NewUser("operator"), null, "operator");
        var tenant = ModularChatApp.NewUser("requested");
        var requested = DateTimeOffset.UtcNow;
        Assert.Equal(HttpStatusCode.Accepted, (await admin.PostJson("/api/admin/summaries/sweep", new { resummarize = true, tenant })).StatusCode);

        // While the other node sweeps, the request waits (it used to be dropped: 202, then nothing).
        await Task.Delay(TimeSpan.FromSeconds(4)); // two retries (every 2 s)
        Assert.True((await (await admin.GetAsync("/api/admin/summaries/sweep")).ReadAs<SweepStatusDto>(HttpStatusCode.OK)).Running);
        await otherNode.EndAsync();

        var status = await Eventually.Until(
            async () => await (await admin.GetAsync("/api/admin/summaries/sweep")).ReadAs<SweepStatusDto>(HttpStatusCode.OK),
            s => !s.Running && s.Last is { Resummarize: true, Ran: true } last && last.StartedAt > requested, what: "The requested sweep did not run");
        Assert.True(status.Last!.StartedAt > requested.AddSeconds(2)); // after the other node's, not at once
    }

    private async Task<ConversationActivity?> Activity(string tenant, Guid id)
    {
        await using var session = app.Host.Services.GetRequiredService<IDocumentStore>().QuerySession(tenant);
        return await session.LoadAsync<ConversationActivity>(id);
    }

    /// <summary>
    /// A conversation of the patient tenant summarized at milestone 10, then grown to 25: milestone 25 is due, and its job
    /// is scheduled an hour out (the tenant's minimum interval); then two hours pass (<see cref="TwoHoursLater"/>).
    /// </summary>
    private async Task<Guid> ScheduledAt25TwoHoursAgo(HttpClient client)
    {
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 10));
        await client.SummaryCovering(id, 10);
        await client.AppendEach(id, Api.Turns(11, 25));
        await Eventually.Until(() => Activity(app.PatientTenant, id), a => a?.PendingUpTo == 25);
        await TwoHoursLater(app.PatientTenant, id);
        return id;
    }

    /// <summary>Handles append notices as the module's handler does (one transaction for the batch).</summary>
    private async Task Track(string tenant, params AppendCommitted[] notices)
    {
        await using var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(tenant);
        await app.Host.Services.GetRequiredService<SummaryScheduler>().TrackAsync(notices, session, CancellationToken.None);
        await session.SaveChangesAsync();
    }

    private async Task Rewrite(string tenant, Guid id, Action<ConversationActivity> change)
    {
        await using var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(tenant);
        var activity = (await session.LoadAsync<ConversationActivity>(id))!;
        change(activity);
        session.Store(activity);
        await session.SaveChangesAsync();
    }

    /// <summary>Moves the conversation's last revision and its pending job two hours into the past.</summary>
    private async Task TwoHoursLater(string tenant, Guid id)
    {
        var store = app.Host.Services.GetRequiredService<IDocumentStore>();
        await using var session = store.LightweightSession(tenant);
        var activity = (await session.LoadAsync<ConversationActivity>(id))!;
        var progress = (await session.LoadAsync<SummaryProgress>(id))!;
        activity.PendingAt = activity.PendingAt!.Value.AddHours(-2);
        progress.RevisedAt = progress.RevisedAt.AddHours(-2);
        session.Store(activity);
        session.Store(progress);
        await session.SaveChangesAsync();
    }
}

internal sealed record SweepResultDto(bool Ran, Guid SweepId, bool Resummarize, long Examined, long Queued, long Finished, long Unfinished, DateTimeOffset StartedAt = default);

internal sealed record SweepStatusDto(bool Running, SweepResultDto? Last);
