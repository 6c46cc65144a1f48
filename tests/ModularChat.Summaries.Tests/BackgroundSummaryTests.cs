using System.Net;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Summaries.Contracts;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Jobs;
using ModularChat.Testing.Fakes;

namespace ModularChat.Summaries.Tests;

[Collection(AppCollection.Name)]
public sealed class BackgroundSummaryTests(SummariesApp app) : IDisposable
{
    // A test that replaces the fake model's responder gets the one it found back when it ends.
    private readonly Func<RecordedRequest, FakeReply> _responder = app.Llm.Responder;

    public void Dispose() => app.Llm.Responder = _responder;

    [Fact]
    public async Task Reaching_a_milestone_writes_a_summary_in_the_background_with_its_provenance()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await client.NewConversation();

        await client.AppendEach(id, Api.Turns(1, 10));
        var summary = await client.SummaryCovering(id, 10);

        Assert.Equal((1, 1L, 10L), (summary.Revision, summary.FromSequence, summary.ToSequence));
        Assert.Equal(((int?)null, (long?)1), (summary.BasedOnRevision, summary.ReadFromSequence)); // from the messages alone
        Assert.Equal("milestone:10", summary.Reason);
        Assert.Equal(("extractive", "textrank-mmr", "extractive-v2", "default"), (summary.Summarizer, summary.Model, summary.PromptVersion, summary.Variant));
        Assert.True(summary.InputTokens > 0 && summary.OutputTokens > 0);
        Assert.Equal(summary.OutputTokens, summary.TokenCount);
        Assert.Contains("] Maria: ", summary.Text, StringComparison.Ordinal);
        Assert.Contains("[2024-03-01]", summary.Text, StringComparison.Ordinal);
        Assert.Equal((10L, 0L), (summary.MessageCount, summary.PendingMessages));
    }

    [Fact]
    public async Task Before_the_first_milestone_there_is_no_summary_and_the_answer_says_so()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 3));

        var problem = await (await client.GetAsync($"/api/conversations/{id}/summary")).ShouldBeProblem(404);
        Assert.Equal("Summary not found.", problem.GetProperty("title").GetString());
        Assert.Empty(await client.History(id));
    }

    [Fact]
    public async Task Appending_a_milestone_message_answers_at_once_while_a_slow_summarizer_works_afterwards()
    {
        // The tenant's summarizer is a model that takes 5 s to answer.
        app.Llm.Responder = _ => new FakeReply("Maria and Tomas booked ten items for the trip to Lisbon.", Delay: TimeSpan.FromSeconds(5));
        using var client = app.Client(app.LlmTenant);
        var id = await client.NewConversation();
        await client.AppendBatch(id, Api.Turns(1, 9));

        using var tenth = await client.PostJson($"/api/conversations/{id}/messages", Api.Turns(10, 10).Single());

        // The append has answered; the summarizer cannot have finished (it needs 5 s), so nothing waited for it.
        Assert.Equal(HttpStatusCode.Created, tenth.StatusCode);
        Assert.Null(await client.CurrentSummary(id));
        var summary = await client.SummaryCovering(id, 10);
        Assert.Equal("Maria and Tomas booked ten items for the trip to Lisbon.", summary.Text);
        Assert.Equal(("llm", "fake-summary-model", "llm"), (summary.Summarizer, summary.Model, summary.Variant));
        Assert.True(summary.DurationMs >= 4_000, $"the summary took {summary.DurationMs} ms: it was not the slow model");
    }

    [Fact]
    public async Task Later_revisions_fold_new_messages_into_the_previous_summary()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 10));
        var first = await client.SummaryCovering(id, 10);

        await client.AppendEach(id, Api.Turns(11, 25, "concert"));
        var second = await client.SummaryCovering(id, 25);

        Assert.Equal((2, 1L, 25L, "milestone:25"), (second.Revision, second.FromSequence, second.ToSequence, second.Reason));
        // What it added, and to what: messages 11-25 merged into revision 1.
        Assert.Equal(((int?)1, (long?)11), (second.BasedOnRevision, second.ReadFromSequence));
        Assert.Contains("concert", second.Text, StringComparison.Ordinal);
        Assert.Contains("trip", second.Text, StringComparison.Ordinal);
        var history = await client.History(id);
        Assert.Equal(new[] { 2, 1 }, history.Select(h => h.Revision));
        Assert.Equal(first.Text, history[1].Text);
    }

    [Fact]
    public async Task Enough_unsummarized_tokens_make_a_summary_before_any_milestone()
    {
        using var client = app.Client(app.TokensTenant);
        var id = await client.NewConversation();

        await client.AppendEach(id, Api.Turns(1, 3));
        var summary = await client.SummaryCovering(id, 2);

        Assert.Equal(("tokens", "tokens"), (summary.Reason, summary.Variant));
    }

    [Fact]
    public async Task Requesting_a_summary_answers_202_and_the_summary_covers_every_message()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 4));

        using var response = await client.PostAsync($"/api/conversations/{id}/summary", null);
        var requested = await response.ReadAs<SummaryRequestedDto>(HttpStatusCode.Accepted);
        Assert.Equal($"/api/conversations/{id}/summary", response.Headers.Location?.ToString());
        Assert.Equal((4L, 0L, true), (requested.UpToSequence, requested.CoveredTo, requested.Queued));

        var summary = await client.SummaryCovering(id, 4);
        Assert.Equal("manual", summary.Reason);

        var again = await (await client.PostAsync($"/api/conversations/{id}/summary", null)).ReadAs<SummaryRequestedDto>(HttpStatusCode.Accepted);
        Assert.Equal((4L, false), (again.CoveredTo, again.Queued));
    }

    [Fact]
    public async Task The_history_pages_newest_first()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await client.NewConversation();
        for (var i = 1; i <= 3; i++)
        {
            await client.AppendEach(id, Api.Turns(i, i));
            (await client.PostAsync($"/api/conversations/{id}/summary", null)).EnsureSuccessStatusCode();
            await client.SummaryCovering(id, i);
        }

        var page = await (await client.GetAsync($"/api/conversations/{id}/summaries?limit=2")).ReadAs<PageDto<SummaryDto>>(HttpStatusCode.OK);
        Assert.Equal(new[] { 3, 2 }, page.Items.Select(s => s.Revision));
        var rest = await (await client.GetAsync($"/api/conversations/{id}/summaries?limit=2&cursor={page.NextCursor}")).ReadAs<PageDto<SummaryDto>>(HttpStatusCode.OK);
        Assert.Equal(new[] { 1 }, rest.Items.Select(s => s.Revision));
        Assert.Null(rest.NextCursor);
        Assert.Equal(new long[] { 1, 2, 3 }, (await client.History(id)).Select(s => s.ToSequence).Reverse());

        await (await client.GetAsync($"/api/conversations/{id}/summaries?cursor=nonsense")).ShouldBeProblem(400);
        // A cursor continues its own conversation's history only.
        var other = await client.NewConversation();
        var problem = await (await client.GetAsync($"/api/conversations/{other}/summaries?limit=2&cursor={page.NextCursor}")).ShouldBeProblem(400);
        Assert.Contains("issued for another list", problem.GetProperty("errors").GetProperty("cursor")[0].GetString(), StringComparison.Ordinal);
        await (await client.GetAsync($"/api/conversations/{id}/summaries?limit=0")).ShouldBeProblem(400);
    }

    [Fact]
    public async Task Another_tenants_conversation_has_no_summary_to_read_or_request()
    {
        using var owner = app.Client(ModularChatApp.NewUser());
        var id = await owner.NewConversation();
        await owner.AppendEach(id, Api.Turns(1, 10));
        await owner.SummaryCovering(id, 10);
        var ownerTenant = (await owner.GetAsync($"/api/conversations/{id}")).StatusCode;
        Assert.Equal(HttpStatusCode.OK, ownerTenant);

        using var stranger = app.Client(ModularChatApp.NewUser());
        var problem = await (await stranger.GetAsync($"/api/conversations/{id}/summary")).ShouldBeProblem(404);
        Assert.Equal("Conversation not found.", problem.GetProperty("title").GetString());
        await (await stranger.GetAsync($"/api/conversations/{id}/summaries")).ShouldBeProblem(404);
        await (await stranger.PostAsync($"/api/conversations/{id}/summary", null)).ShouldBeProblem(404);
        await (await stranger.GetAsync($"/api/conversations/{Guid.NewGuid()}/summary")).ShouldBeProblem(404);
    }

    [Fact]
    public async Task Other_modules_read_the_current_summary_through_the_contract_for_its_tenant_only()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 10));
        var summary = await client.SummaryCovering(id, 10);
        var summaries = app.Host.Services.GetRequiredService<IConversationSummaries>();

        var current = await summaries.GetCurrentAsync(tenant, id);

        Assert.NotNull(current);
        Assert.Equal((summary.Text, 1L, 10L, 1, summary.TokenCount), (current.Text, current.FromSequence, current.ToSequence, current.Revision, current.TokenCount));
        Assert.Null(await summaries.GetCurrentAsync("someone-else", id));
    }

    [Fact]
    public async Task Each_revision_is_counted_and_timed_per_variant_with_its_lag()
    {
        var meters = app.Host.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var generated = new MetricCollector<long>(meters, ModularChatTelemetry.SourceName, MetricNames.SummariesGenerated);
        using var duration = new MetricCollector<double>(meters, ModularChatTelemetry.SourceName, MetricNames.SummaryDuration);
        using var lag = new MetricCollector<double>(meters, ModularChatTelemetry.SourceName, MetricNames.SummaryLag);
        using var client = app.Client(app.TokensTenant);
        var id = await client.NewConversation();

        await client.AppendEach(id, Api.Turns(1, 3));
        await client.SummaryCovering(id, 2);

        Assert.Contains(generated.GetMeasurementSnapshot(), m => Equals(m.Tags["variant"], "tokens") && Equals(m.Tags["reason"], "tokens"));
        Assert.Contains(duration.GetMeasurementSnapshot(), m => Equals(m.Tags["variant"], "tokens") && m.Value >= 0);
        Assert.Contains(lag.GetMeasurementSnapshot(), m => Equals(m.Tags["variant"], "tokens") && m.Value >= 0);
    }

    [Fact]
    public async Task An_attempt_that_fails_at_the_commit_is_logged_and_counted_as_the_writers_own_failures_are()
    {
        var meters = app.Host.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var failures = new MetricCollector<long>(meters, ModularChatTelemetry.SourceName, MetricNames.SummaryFailures);
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await client.NewConversation();
        // PostgreSQL refuses the first commit of the conversation's summary (as when the database goes away at that moment):
        // the writer has returned by then, and Wolverine commits.
        var progress = app.Host.Services.GetRequiredService<IDocumentStore>().Options.Schema.For<SummaryProgress>();
        var refused = $"summary commit refused ({id:N})";
        await using (await app.RefuseFirstWritesAsync(progress, $"new.id = '{id}'", $"raise exception '{refused}'"))
        {
            await client.AppendEach(id, Api.Turns(1, 10));

            // The retry stores it.
            Assert.Equal(1, (await client.SummaryCovering(id, 10)).Revision);
        }

        // It failed without a word from the writer and was not counted: Wolverine's entry for it is at Debug.
        var entry = Assert.Single(WriterEntriesAbout(id, LogLevel.Warning));
        Assert.Equal(LogLevel.Warning, entry.Level);
        Assert.Contains("failed on attempt 1", entry.Message, StringComparison.Ordinal);
        Assert.Contains(Exceptions.Flatten(entry.Exception!), e => e is Npgsql.PostgresException && e.Message.Contains(refused, StringComparison.Ordinal));
        var measured = Assert.Single(failures.GetMeasurementSnapshot(), m => Equals(m.Tags["error"], entry.Exception!.GetType().Name));
        Assert.Equal(("default", "retry"), (measured.Tags["variant"] as string, measured.Tags["outcome"] as string));
    }

    [Fact]
    public async Task An_attempt_whose_commit_loses_a_race_with_another_writer_is_counted_as_a_conflict_not_a_failure_to_retry()
    {
        var meters = app.Host.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var failures = new MetricCollector<long>(meters, ModularChatTelemetry.SourceName, MetricNames.SummaryFailures);
        using var client = app.Client(ModularChatApp.NewUser());
        var id = await client.NewConversation();
        // The summary stream's first commit finds it at another version than expected, as Marten's append says when another
        // writer of the revision got there first (the retry, at once, then usually finds the revision written; here it writes it).
        await using (await app.RefuseFirstWritesAsync("modularchat.mt_streams", $"new.id = '{SummaryStreams.For(id)}'", LostRace))
        {
            await client.AppendEach(id, Api.Turns(1, 10));

            Assert.Equal(1, (await client.SummaryCovering(id, 10)).Revision);
        }

        var entry = Assert.Single(WriterEntriesAbout(id, LogLevel.Information));
        Assert.Equal(LogLevel.Information, entry.Level);
        Assert.Contains("lost a race at the commit on attempt 1", entry.Message, StringComparison.Ordinal);
        var measured = Assert.Single(failures.GetMeasurementSnapshot(), m => Equals(m.Tags["error"], entry.Exception!.GetType().Name));
        Assert.Equal(("default", "conflict"), (measured.Tags["variant"] as string, measured.Tags["outcome"] as string));
    }

    [Fact]
    public async Task A_job_whose_commit_loses_the_race_four_times_in_a_row_is_dead_lettered_logged_and_counted_as_such_once()
        // The 4th lost race in a row is one more than the rule for lost races has retries for.
        => await DeadLetteredAfterThreeLostRacesAndAsync(_ => LostRace);

    [Fact]
    public async Task A_job_that_fails_at_the_commit_after_lost_races_used_up_its_attempts_is_dead_lettered_logged_and_counted_as_such_once()
    {
        // The 4th attempt is past the retry delays' steps (two here, then the dead-letter store at the 3rd attempt), as
        // attempts count across both rules.
        var failure = await DeadLetteredAfterThreeLostRacesAndAsync(id => $"raise exception 'summary commit refused ({id:N})'");

        Assert.Contains($"summary commit refused ({failure.ConversationId:N})", failure.ExceptionMessage, StringComparison.Ordinal);
    }

    /// <summary>
    /// A new conversation's summary job whose first commit and its three retries at once lose the race and whose 4th commit
    /// PostgreSQL answers with <paramref name="fourthCommit"/> (given the conversation's id): it is in the dead-letter store
    /// after 4 attempts, logged and counted once as such (<see cref="AssertDeadLetteredOnce"/>).
    /// </summary>
    private async Task<SummaryFailure> DeadLetteredAfterThreeLostRacesAndAsync(Func<Guid, string> fourthCommit)
    {
        var meters = app.Host.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var failures = new MetricCollector<long>(meters, ModularChatTelemetry.SourceName, MetricNames.SummaryFailures);
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        SummaryFailure failure;
        await using (await app.RefuseFirstWritesAsync("modularchat.mt_streams", $"new.id = '{SummaryStreams.For(id)}'", LostRace, LostRace, LostRace, fourthCommit(id)))
        {
            await client.AppendEach(id, Api.Turns(1, 10));
            failure = await DeadLetteredAsync(tenant, id);
        }

        Assert.Equal(4, failure.Attempts);
        AssertDeadLetteredOnce(id, failure, failures, lostRaces: 3);
        return failure;
    }

    /// <summary>What PostgreSQL answers a commit of the summary stream's first revision that lost the race (Marten's MT003).</summary>
    private const string LostRace = "raise exception 'Stream version mismatch on ''%'': expected 0, actual 1', new.id using errcode = 'MT003'";

    /// <summary>The tenant's job for conversation <paramref name="id"/> once it is in the dead-letter store.</summary>
    private async Task<SummaryFailure> DeadLetteredAsync(string tenant, Guid id)
        => (await Eventually.Until(
            async () => (await app.Host.Services.GetRequiredService<SummaryFailures>().ListAsync(tenant, null, 100, CancellationToken.None)).Items
                .FirstOrDefault(f => f.ConversationId == id),
            f => f is not null, what: $"the summary job of conversation {id} in the dead-letter store"))!;

    /// <summary>
    /// Each failed attempt of the job of conversation <paramref name="id"/> logged by the writer and counted once, in order: the
    /// <paramref name="lostRaces"/> first as lost races (<c>conflict</c>, at Information), the last one, which dead-lettered
    /// the job, as <c>dead_letter</c> at Error: the one error about the job in the log (Wolverine's own entry for the move is
    /// below it; Marten's for a command that failed otherwise than by a lost race are about the command, ConcurrencyLogTests).
    /// </summary>
    private void AssertDeadLetteredOnce(Guid id, SummaryFailure failure, MetricCollector<long> failures, int lostRaces)
    {
        var entries = WriterEntriesAbout(id, LogLevel.Information);
        string[] expected = [.. Enumerable.Range(1, lostRaces).Select(a => $"lost a race at the commit on attempt {a} "), $"failed on attempt {lostRaces + 1}, the last: dead-lettered"];
        Assert.Equal(expected, entries.Select((e, i) => i < expected.Length && e.Message.Contains(expected[i], StringComparison.Ordinal) ? expected[i] : e.Message));
        Assert.Equal(LogLevel.Error, entries[^1].Level);
        var errors = app.Logs.Entries.Where(e => e.Level is >= LogLevel.Error and < LogLevel.None && !e.Category.StartsWith("Marten", StringComparison.Ordinal)
            && (e.Message.Contains(id.ToString(), StringComparison.Ordinal) || e.Message.Contains(failure.Id.ToString(), StringComparison.Ordinal))).ToList();
        Assert.Equal(entries[^1], Assert.Single(errors));
        var errorTypes = entries.Select(e => e.Exception!.GetType().Name).ToHashSet();
        var counted = failures.GetMeasurementSnapshot().Where(m => errorTypes.Contains((string)m.Tags["error"]!)).ToList();
        Assert.Equal([.. Enumerable.Repeat(SummariesMetrics.Conflict, lostRaces), SummariesMetrics.DeadLetter], counted.Select(m => m.Tags["outcome"] as string));
        Assert.All(counted, m => Assert.Equal((1L, "default"), (m.Value, m.Tags["variant"] as string)));
    }

    /// <summary>What the summary writer logged at <paramref name="least"/> or above about conversation <paramref name="id"/>'s jobs.</summary>
    private List<LogEntry> WriterEntriesAbout(Guid id, LogLevel least)
        => app.Logs.Entries.Where(e => e.Category.EndsWith(".SummaryWriter", StringComparison.Ordinal) && e.Level >= least && e.Level < LogLevel.None
            && e.Message.Contains($"Summarizing conversation {id}", StringComparison.Ordinal)).ToList();

    [Fact]
    public async Task Automatic_summaries_wait_for_the_minimum_interval_and_count_as_backlog_meanwhile()
    {
        using var client = app.Client(app.PatientTenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 10));
        await client.SummaryCovering(id, 10);

        await client.AppendEach(id, Api.Turns(11, 25));

        // Milestone 25 is due, but the tenant's minimum interval is an hour: the job is scheduled (for then), not run.
        // Meanwhile the conversation is what the backlog gauge counts: pending up to 25, covered to 10.
        var store = app.Host.Services.GetRequiredService<Marten.IDocumentStore>();
        await Eventually.Until(async () =>
        {
            await using var session = store.QuerySession(app.PatientTenant);
            return ((await session.LoadAsync<ConversationActivity>(id))?.PendingUpTo, (await session.LoadAsync<SummaryProgress>(id))?.CoveredTo);
        }, state => state == (25, 10), what: "Milestone 25 never became pending");
        var scheduledFor = await Eventually.Until(() => app.ScheduledJobsAbout(id), jobs => jobs.Count > 0, what: "No summary job scheduled for the conversation");
        Assert.All(scheduledFor, at => Assert.True(at > DateTimeOffset.UtcNow.AddMinutes(50), $"A job about the conversation runs at {at:O}, not an hour out"));
        var summary = await client.CurrentSummary(id);
        Assert.Equal((1, 10L, 15L), (summary!.Revision, summary.ToSequence, summary.PendingMessages));
        Assert.Equal(new[] { 1 }, (await client.History(id)).Select(h => h.Revision));

        // A request is not automatic: it is written now.
        (await client.PostAsync($"/api/conversations/{id}/summary", null)).EnsureSuccessStatusCode();
        Assert.Equal("manual", (await client.SummaryCovering(id, 25)).Reason);
    }

    [Fact]
    public async Task A_host_with_bad_summary_settings_refuses_to_start_and_names_the_setting()
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { ["Summaries:Milestones"] = "50,10" }));

        var all = string.Join(" | ", Exceptions.Flatten(error).Select(e => e.Message));
        Assert.Contains("Summaries:Milestones", all, StringComparison.Ordinal);
        Assert.Contains(Exceptions.Flatten(error), e => e is OptionsValidationException);
    }

    [Theory]
    [InlineData("Summaries:Llm:Endpoint", "notaurl")] // read 'Summaries:Llm.Endpoint'
    [InlineData("Summaries:Variants:premium:Summarizer", "gpt")] // read 'Summaries:Variants[0].Value.Summarizer', without the variant's name
    [InlineData("Summaries:TenantVariants:acme", "nosuch")] // read 'Summaries:TenantVariants[0]'
    public async Task A_refused_nested_setting_is_named_by_its_configuration_key(string setting, string value)
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?>
        {
            ["Summaries:Variants:basic:Summarizer"] = "extractive", // a valid variant before the refused one: its name, not its position
            [setting] = value,
        }));

        Assert.Contains(Exceptions.Flatten(error), e => e is OptionsValidationException
            && e.Message.Contains($"Configuration '{setting}': ", StringComparison.Ordinal));
    }
}
