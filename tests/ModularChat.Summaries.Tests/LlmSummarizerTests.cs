using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text.RegularExpressions;
using Alba;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Summaries.Features.Sweep;
using ModularChat.Testing.Fakes;

namespace ModularChat.Summaries.Tests;

/// <summary>The llm summarizer against a real HTTP server on loopback that speaks the OpenAI chat-completions protocol.</summary>
[Collection(AppCollection.Name)]
public sealed partial class LlmSummarizerTests(SummariesApp app) : IDisposable
{
    // Tests replace the fake model's responder (one collection: one test at a time); each gets the responder it found back.
    private readonly Func<RecordedRequest, FakeReply> _responder = app.Llm.Responder;

    public void Dispose() => app.Llm.Responder = _responder;

    /// <summary>Answers "Summary through N." where N is the last message of the request.</summary>
    private static FakeReply SummaryThroughLastMessage(RecordedRequest request)
    {
        var range = Range().Match(UserText(request));
        return FakeReply.Text(range.Success ? $"Summary through {range.Groups[2].Value}." : "Summary.");
    }

    private static string UserText(RecordedRequest request)
        => request.Messages.LastOrDefault(m => m?["role"]?.GetValue<string>() == "user")?["content"]?.ToString() ?? "";

    private static string SystemText(RecordedRequest request)
        => request.Messages.FirstOrDefault(m => m?["role"]?.GetValue<string>() == "system")?["content"]?.ToString() ?? "";

    /// <summary>What the summary writer logged about failures of the jobs of conversation <paramref name="id"/>.</summary>
    private List<LogEntry> WriterEntriesAbout(Guid id)
        => app.Logs.Entries.Where(e => e.Category.EndsWith(".SummaryWriter", StringComparison.Ordinal) && e.Level >= LogLevel.Warning && e.Level < LogLevel.None
            && e.Message.Contains($"Summarizing conversation {id}", StringComparison.Ordinal)).ToList();

    /// <summary>Wolverine's entries for failed attempts of summary jobs (logged under the message type's name).</summary>
    private List<LogEntry> JobFailureEntries()
        => app.Logs.Entries.Where(e => e.Category.EndsWith(".SummarizeConversation", StringComparison.Ordinal)
            && e.Message.StartsWith("Failed to process message", StringComparison.Ordinal)).ToList();

    /// <summary>The revisions a node stores part way (<see cref="MetricNames.SummaryParts"/>).</summary>
    private static MetricCollector<long> PartsOf(IAlbaHost node)
        => new(node.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.SummaryParts);

    /// <summary>Why each of the variant's parts stopped, in order.</summary>
    private static List<string?> StoppedBy(MetricCollector<long> parts, string variant)
        => [.. parts.GetMeasurementSnapshot().Where(m => Equals(m.Tags["variant"], variant)).Select(m => m.Tags["stopped_by"]?.ToString())];

    /// <summary>A client of another node of the deployment, as the tenant's user.</summary>
    private HttpClient ClientOf(IAlbaHost node, string tenant)
    {
        var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(tenant));
        return client;
    }

    private List<RecordedRequest> RequestsAbout(string marker)
        => app.Llm.Requests.Where(r => UserText(r).Contains(marker, StringComparison.Ordinal)).ToList();

    [Fact]
    public async Task A_later_revision_sends_the_model_only_the_previous_summary_and_the_new_messages()
    {
        app.Llm.Responder = SummaryThroughLastMessage;
        var topic = $"fold-{Guid.NewGuid():N}";
        using var client = app.Client(app.LlmTenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 10, topic));
        Assert.Equal("Summary through 10.", (await client.SummaryCovering(id, 10)).Text);

        await client.AppendEach(id, Api.Turns(11, 25, topic));
        var second = await client.SummaryCovering(id, 25);

        Assert.Equal(("Summary through 25.", 2, "llm-v1"), (second.Text, second.Revision, second.PromptVersion));
        var request = RequestsAbout(topic).Last();
        var prompt = UserText(request);
        Assert.Contains("Current summary:\nSummary through 10.", prompt, StringComparison.Ordinal);
        Assert.Contains("Turn 11 about", prompt, StringComparison.Ordinal);
        Assert.Contains("Turn 25 about", prompt, StringComparison.Ordinal);
        Assert.DoesNotContain("Turn 10 about", prompt, StringComparison.Ordinal);
        Assert.Contains("] Maria (user): ", prompt, StringComparison.Ordinal);
        Assert.Contains("[2024-03-01 09:11]", prompt, StringComparison.Ordinal);
        // The length limit is part of the instructions; the request goes to the configured model with the configured key.
        Assert.Contains("must not exceed 60 tokens", SystemText(request), StringComparison.Ordinal);
        Assert.Equal("fake-summary-model", request.Body["model"]?.GetValue<string>());
        Assert.Equal("Bearer " + SummariesApp.GlobalKey, request.Authorization);
    }

    [Fact]
    public async Task A_rebuild_after_deleting_tells_the_model_which_kept_messages_its_summary_already_stands_for()
    {
        // Revision 1 covers 1-12; retention deletes 1-7. The rebuild can only start from revision 1's text (the one record
        // of 1-7) and reads 8-12 again: folded in as new messages, what they say would be in the summary twice.
        app.Llm.Responder = SummaryThroughLastMessage;
        var topic = $"reread-{Guid.NewGuid():N}";
        using var client = app.Client(app.LlmDeleteTenant);
        var id = await client.NewConversation();
        await client.AppendBatch(id, Api.Turns(1, 12, topic));
        Assert.Equal("Summary through 12.", (await client.SummaryCovering(id, 12)).Text);
        await Eventually.Until(
            async () => await (await client.GetAsync($"/api/conversations/{id}/retention")).ReadAs<RetentionDto>(HttpStatusCode.OK),
            v => v.Deleted.Any(r => r.ToSequence == 7), what: "retention");

        var swept = await app.Host.Services.GetRequiredService<SummarySweep>()
            .RunAsync(new SweepRequest(Resummarize: true, TenantId: app.LlmDeleteTenant), null, CancellationToken.None);

        Assert.Equal((1L, 0L), (swept.Finished, swept.Unfinished));
        var rebuilt = (await client.CurrentSummary(id))!;
        Assert.Equal((2, "resummarize", (int?)1, (long?)8), (rebuilt.Revision, rebuilt.Reason, rebuilt.BasedOnRevision, rebuilt.ReadFromSequence));
        var prompt = UserText(RequestsAbout(topic).Last());
        Assert.Contains("Current summary (it already stands for every message up to 12):\nSummary through 12.", prompt, StringComparison.Ordinal);
        Assert.Contains("Next messages (8 to 12). Messages 8 to 12 are already in the current summary and are given again only for their details", prompt, StringComparison.Ordinal);
        Assert.DoesNotContain("Turn 7 about", prompt, StringComparison.Ordinal);

        // The next revision reads only what came after: no such note.
        await client.AppendEach(id, Api.Turns(13, 25, topic));
        await client.SummaryCovering(id, 25);
        var next = UserText(RequestsAbout(topic).Last());
        Assert.Contains("Current summary:\nSummary through 12.", next, StringComparison.Ordinal);
        Assert.DoesNotContain("already", next, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_revision_is_merged_chunk_by_chunk_never_sending_more_than_a_chunk_of_messages()
    {
        app.Llm.Responder = SummaryThroughLastMessage;
        var topic = $"chunks-{Guid.NewGuid():N}";
        using var client = app.Client(app.ChunkedLlmTenant);
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 10, topic));
        var summary = await client.SummaryCovering(id, 10);

        Assert.Equal("Summary through 10.", summary.Text);
        var requests = RequestsAbout(topic);
        Assert.Equal(3, requests.Count);
        Assert.All(requests, r => Assert.InRange(TurnCount().Matches(UserText(r)).Count, 1, 4));
        Assert.Contains("Current summary:\n(none yet)", UserText(requests[0]), StringComparison.Ordinal);
        Assert.Contains("Current summary:\nSummary through 4.", UserText(requests[1]), StringComparison.Ordinal);
        Assert.Contains("Current summary:\nSummary through 8.", UserText(requests[2]), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_long_backlog_is_summarized_in_parts_of_at_most_MaxChunksPerJob_chunks_each_stored_as_a_revision()
    {
        app.Llm.Responder = SummaryThroughLastMessage;
        var topic = $"parts-{Guid.NewGuid():N}";
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Summaries:MaxChunksPerJob"] = "2" });
        using var parts = PartsOf(node);
        using var client = ClientOf(node, app.ChunkedLlmTenant);
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 25, topic));
        await client.SummaryCovering(id, 25);

        // Chunks of 4, two per job: each job stores the revision so far and queues the rest, which goes on from it at once
        // (the strategy is not asked again: no minimum interval, the same reason).
        var history = (await client.History(id)).OrderBy(s => s.Revision).ToList();
        Assert.Equal([8L, 16L, 24L, 25L], history.Select(s => s.ToSequence));
        Assert.All(history, s => Assert.Equal("milestone:25", s.Reason));
        Assert.Equal("Summary through 25.", history[^1].Text);
        // Every chunk went to the model once, each after the summary of the chunks before it.
        var requests = RequestsAbout(topic);
        Assert.Equal(7, requests.Count);
        Assert.Contains("Current summary:\nSummary through 8.", UserText(requests[2]), StringComparison.Ordinal);
        Assert.Contains("Current summary:\nSummary through 16.", UserText(requests[4]), StringComparison.Ordinal);
        Assert.Equal(["max_chunks", "max_chunks", "max_chunks"], StoppedBy(parts, "llm-chunks"));
    }

    [Fact]
    public async Task A_rebuild_in_parts_starts_from_the_first_message_and_counts_as_done_only_with_its_last_part()
    {
        app.Llm.Responder = SummaryThroughLastMessage;
        var topic = $"reparts-{Guid.NewGuid():N}";
        // A tenant of its own (the rebuild is the tenant's), on the chunks-of-4 variant on this node.
        var tenant = ModularChatApp.NewUser("llm-chunks");
        await using var node = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["Summaries:MaxChunksPerJob"] = "2",
            [$"Summaries:TenantVariants:{tenant}"] = "llm-chunks",
        });
        using var client = ClientOf(node, tenant);
        var id = await client.NewConversation();
        await client.AppendBatch(id, Api.Turns(1, 10, topic));
        await client.SummaryCovering(id, 10);
        var calls = RequestsAbout(topic).Count;

        var result = await node.Services.GetRequiredService<SummarySweep>()
            .RunAsync(new SweepRequest(Resummarize: true, TenantId: tenant), null, CancellationToken.None);

        Assert.Equal((1L, 1L, 0L), (result.Queued, result.Finished, result.Unfinished));
        var rebuilt = (await client.History(id)).Where(s => s.Reason == "resummarize").OrderBy(s => s.Revision).ToList();
        Assert.Equal([8L, 10L], rebuilt.Select(s => s.ToSequence));
        var requests = RequestsAbout(topic)[calls..];
        Assert.Equal(3, requests.Count);
        Assert.Contains("Current summary:\n(none yet)", UserText(requests[0]), StringComparison.Ordinal);
        Assert.Contains("Current summary:\nSummary through 8.", UserText(requests[2]), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_backlog_the_model_needs_longer_than_the_job_timeout_for_is_summarized_in_parts_instead_of_timing_out()
    {
        // 4 chunks at 3 s each: one job would need 12 s of its 10. Without parts it was cancelled at the timeout and every
        // retry started over from the first chunk, paying for each chunk again; with the same timeout on every node (as
        // deployed) each retry was cancelled too, and the summary was dead-lettered, never written. (Here a retry may run
        // on the fixture's own node, whose timeout is the default.)
        var topic = $"slow-{Guid.NewGuid():N}";
        app.Llm.Responder = r => UserText(r).Contains(topic, StringComparison.Ordinal)
            ? SummaryThroughLastMessage(r) with { Delay = TimeSpan.FromSeconds(3) }
            : SummaryThroughLastMessage(r);
        await using var node = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["Summaries:JobTimeout"] = "00:00:10",
            ["Summaries:MaxChunksPerJob"] = "0",
        });
        using var parts = PartsOf(node);
        using var client = ClientOf(node, app.ChunkedLlmTenant);
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 13, topic));
        var summary = await client.SummaryCovering(id, 13, seconds: 90);

        Assert.Equal("Summary through 13.", summary.Text);
        // A job stops once half its time has gone (after the second chunk, 6 s): two parts, and no chunk sent twice.
        Assert.Equal([8L, 13L], (await client.History(id)).OrderBy(s => s.Revision).Select(s => s.ToSequence));
        Assert.Equal(4, RequestsAbout(topic).Count);
        Assert.Equal(["job_time"], StoppedBy(parts, "llm-chunks"));
    }

    [Fact]
    public async Task An_attempt_cut_at_the_job_timeout_is_logged_and_counted_naming_the_setting()
    {
        // The model needs 8 s for the one chunk, the node's jobs have 5 s: Wolverine cancels the attempt. It was a bare
        // "A task was canceled." that the writer neither logged nor counted (Wolverine's own entry for it is at Debug): an
        // attempt, and a job, that ran out of time failed silently. The retry (on whichever node) gets its answer at once.
        var topic = $"timeout-{Guid.NewGuid():N}";
        var calls = 0;
        app.Llm.Responder = r => UserText(r).Contains(topic, StringComparison.Ordinal) && Interlocked.Increment(ref calls) == 1
            ? SummaryThroughLastMessage(r) with { Delay = TimeSpan.FromSeconds(8) }
            : SummaryThroughLastMessage(r);
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Summaries:JobTimeout"] = "00:00:05" });
        using var failures = new MetricCollector<long>(
            node.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.SummaryFailures);
        using var client = ClientOf(node, app.LlmTenant);
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 10, topic));

        Assert.Equal("Summary through 10.", (await client.SummaryCovering(id, 10, seconds: 90)).Text);
        var entry = Assert.Single(WriterEntriesAbout(id));
        Assert.Equal(LogLevel.Warning, entry.Level);
        Assert.Contains("failed on attempt 1", entry.Message, StringComparison.Ordinal);
        Assert.Contains("ran past Summaries:JobTimeout (00:00:05)", Assert.IsType<TimeoutException>(entry.Exception).Message, StringComparison.Ordinal);
        var measured = Assert.Single(failures.GetMeasurementSnapshot(), m => Equals(m.Tags["variant"], "llm"));
        Assert.Equal(("TimeoutException", "retry"), (measured.Tags["error"] as string, measured.Tags["outcome"] as string));
    }

    [Fact]
    public async Task A_reply_over_the_length_limit_is_cut_back_to_whole_sentences()
    {
        var rambling = string.Join(' ', Enumerable.Range(1, 80).Select(i => $"Fact {i} about the trip is worth remembering."));
        app.Llm.Responder = _ => FakeReply.Text(rambling);
        using var client = app.Client(app.LlmTenant);
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 10, $"long-{Guid.NewGuid():N}"));
        var summary = await client.SummaryCovering(id, 10);

        Assert.InRange(summary.TokenCount, 1, 60);
        Assert.EndsWith("worth remembering.", summary.Text, StringComparison.Ordinal);
        Assert.StartsWith(summary.Text, rambling, StringComparison.Ordinal);
    }

    [Fact]
    public async Task NUL_characters_in_the_model_reply_are_left_out_of_the_stored_summary()
    {
        // PostgreSQL stores no NUL character: with one, every attempt of the job failed until it was dead-lettered.
        app.Llm.Responder = _ => FakeReply.Text("They plan\0 a trip to Lisbon.");
        using var client = app.Client(app.LlmTenant);
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 10, $"nul-{Guid.NewGuid():N}"));
        var summary = await client.SummaryCovering(id, 10);

        Assert.Equal("They plan a trip to Lisbon.", summary.Text);
    }

    [Fact]
    public async Task A_server_error_is_retried_and_the_summary_still_arrives()
    {
        var meters = app.Host.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var failures = new MetricCollector<long>(meters, ModularChatTelemetry.SourceName, MetricNames.SummaryFailures);
        var topic = $"flaky-{Guid.NewGuid():N}";
        var calls = 0;
        app.Llm.Responder = r => UserText(r).Contains(topic, StringComparison.Ordinal) && Interlocked.Increment(ref calls) == 1
            ? FakeReply.Error(503, "The server is overloaded.")
            : SummaryThroughLastMessage(r);
        using var client = app.Client(app.LlmTenant);
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 10, topic));

        Assert.Equal("Summary through 10.", (await client.SummaryCovering(id, 10)).Text);
        Assert.Equal(2, RequestsAbout(topic).Count);
        Assert.Contains(failures.GetMeasurementSnapshot(), m => Equals(m.Tags["outcome"], "retry") && Equals(m.Tags["variant"], "llm"));
        Assert.Single(await client.History(id));
        // A failure that a retry mends is a warning, not an error (operators page on errors), and one entry, the writer's:
        // Wolverine's own for the attempt (its failure with the same stack trace, and the retry it scheduled, "was
        // rescheduled to queue", an Error in Wolverine's code) are below Warning.
        Assert.Equal(LogLevel.Warning, Assert.Single(WriterEntriesAbout(id)).Level);
        Assert.All(JobFailureEntries(), e => Assert.True(e.Level < LogLevel.Warning, e.ToString()));
        var rescheduled = app.Logs.Entries.Where(e => e.Category == "Wolverine.Runtime.WolverineRuntime" && e.EventId.Id == 109
            && e.Message.Contains("was rescheduled", StringComparison.Ordinal) && e.Message.Contains(app.LlmTenant, StringComparison.Ordinal)).ToList();
        Assert.All(rescheduled, e => Assert.True(e.Level < LogLevel.Warning, e.ToString()));
    }

    [Fact]
    public async Task A_model_that_does_not_answer_in_time_is_retried()
    {
        var topic = $"slow-{Guid.NewGuid():N}";
        var calls = 0;
        app.Llm.Responder = r => UserText(r).Contains(topic, StringComparison.Ordinal) && Interlocked.Increment(ref calls) == 1
            ? new FakeReply("Too late.", Delay: TimeSpan.FromSeconds(20))
            : SummaryThroughLastMessage(r);
        using var client = app.Client(app.LlmTenant);
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 10, topic));

        // Llm:Timeout is 8 s here: the first attempt gives up, the retry gets the answer.
        Assert.Equal("Summary through 10.", (await client.SummaryCovering(id, 10, seconds: 60)).Text);
        Assert.Equal(2, RequestsAbout(topic).Count);
    }

    [Fact]
    public async Task A_job_that_keeps_failing_is_dead_lettered_listed_for_admins_and_replayed_on_request()
    {
        var topic = $"poison-{Guid.NewGuid():N}";
        var broken = true;
        app.Llm.Responder = r => UserText(r).Contains(topic, StringComparison.Ordinal) && Volatile.Read(ref broken)
            ? FakeReply.Error(500, "Model crashed.")
            : SummaryThroughLastMessage(r);
        using var client = app.Client(app.LlmTenant);
        using var admin = app.Client(ModularChatApp.NewUser("admin"), app.LlmTenant, "admin");
        var (id, failure) = await DeadLetteredAsync(client, admin, topic);
        Assert.Equal((app.LlmTenant, "milestone:10", 10L), (failure.TenantId, failure.Reason, failure.UpToSequence));
        Assert.Equal(3, failure.Attempts); // the first attempt and the two configured retries
        Assert.Contains("500", failure.ExceptionMessage, StringComparison.Ordinal);
        Assert.Equal(3, RequestsAbout(topic).Count);
        // One error for the job, when it is dead-lettered; its failed attempts are warnings, Wolverine's entries for them too.
        Assert.Equal(
            [(LogLevel.Warning, 1), (LogLevel.Warning, 2), (LogLevel.Error, 3)],
            WriterEntriesAbout(id).Select(e => (e.Level, Attempt: int.Parse(AttemptNumber().Match(e.Message).Groups[1].Value, CultureInfo.InvariantCulture))));
        // The error names the conversation and why the job failed.
        Assert.Contains("dead-lettered", WriterEntriesAbout(id).Last().Message, StringComparison.Ordinal);
        Assert.Contains("Model crashed.", WriterEntriesAbout(id).Last().Message, StringComparison.Ordinal);
        Assert.Null(await client.CurrentSummary(id));
        Assert.Equal(HttpStatusCode.Forbidden, (await client.GetAsync("/api/admin/summaries/failures")).StatusCode);
        // A page far past the end (a cursor a client made up) is empty.
        var farCursor = System.Buffers.Text.Base64Url.EncodeToString(System.Text.Encoding.UTF8.GetBytes($"sumfailk:-|{DateTimeOffset.MaxValue.UtcTicks}|{Guid.Empty:N}"));
        var far = await (await admin.GetAsync($"/api/admin/summaries/failures?limit=100&cursor={farCursor}")).ReadAs<FailuresPageDto>(HttpStatusCode.OK);
        Assert.Equal((0, true, null), (far.Items.Count, far.Total >= 1, far.NextCursor));
        // A cursor holds the last failure of its page (when it failed, its id): the next page starts after it, with any limit.
        var all = await (await admin.GetAsync("/api/admin/summaries/failures?limit=100")).ReadAs<FailuresPageDto>(HttpStatusCode.OK);
        var afterOne = System.Buffers.Text.Base64Url.EncodeToString(System.Text.Encoding.UTF8.GetBytes($"sumfailk:-|{all.Items[0].FailedAt!.Value.UtcTicks}|{all.Items[0].Id:N}"));
        var rest = await (await admin.GetAsync($"/api/admin/summaries/failures?limit=100&cursor={afterOne}")).ReadAs<FailuresPageDto>(HttpStatusCode.OK);
        // (Another test's job may be dead-lettered meanwhile: it comes last.)
        Assert.Equal(all.Items.Skip(1).Select(f => f.Id), rest.Items.Take(all.Items.Count - 1).Select(f => f.Id));
        var first = await (await admin.GetAsync("/api/admin/summaries/failures?limit=1")).ReadAs<FailuresPageDto>(HttpStatusCode.OK);
        Assert.Equal(first.Total > 1 ? afterOne : null, first.NextCursor);

        Volatile.Write(ref broken, false);
        var replayed = await (await admin.PostJson("/api/admin/summaries/failures/replay", new { ids = new[] { failure.Id, Guid.NewGuid() } }))
            .ReadAs<ReplayedDto>(HttpStatusCode.Accepted);

        Assert.Equal(1, replayed.Replayed);
        Assert.Equal("Summary through 10.", (await client.SummaryCovering(id, 10, seconds: 60)).Text);
        await Eventually.Until(
            async () => (await (await admin.GetAsync("/api/admin/summaries/failures?limit=100")).ReadAs<FailuresPageDto>(HttpStatusCode.OK)).Items,
            items => items.All(f => f.ConversationId != id));

        // Those three entries are all that was logged about the job at Warning or above, each with the exception once:
        // Wolverine's own for the same attempts (the failure, the retry, the dead-lettering; they name the envelope) were
        // a second and third warning per attempt, and a second error.
        var aboutJob = app.Logs.Entries.Where(e => e.Level >= LogLevel.Warning && e.Level < LogLevel.None
            && (e.Message.Contains(id.ToString(), StringComparison.Ordinal) || e.Message.Contains(failure.Id.ToString(), StringComparison.Ordinal))).ToList();
        Assert.Equal(WriterEntriesAbout(id).Select(e => e.ToString()), aboutJob.Select(e => e.ToString()));
        Assert.All(aboutJob, e => Assert.IsType<ModularChat.BuildingBlocks.Security.ModelServerException>(e.Exception));
    }

    [Fact]
    public async Task The_failure_metric_tells_the_attempts_that_are_retried_from_the_job_given_up()
    {
        var meters = app.Host.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var failures = new MetricCollector<long>(meters, ModularChatTelemetry.SourceName, MetricNames.SummaryFailures);
        var topic = $"given-up-{Guid.NewGuid():N}";
        app.Llm.Responder = r => UserText(r).Contains(topic, StringComparison.Ordinal)
            ? FakeReply.Error(500, "Model crashed.")
            : SummaryThroughLastMessage(r);
        using var client = app.Client(app.GivenUpTenant);
        using var admin = app.Client(ModularChatApp.NewUser("admin"), app.GivenUpTenant, "admin");

        var (_, failure) = await DeadLetteredAsync(client, admin, topic);

        // Three failed attempts (the first and the two configured retries), one job given up: the sum counts attempts,
        // outcome=dead_letter the jobs that failed for good.
        Assert.Equal(3, failure.Attempts);
        var ofJob = failures.GetMeasurementSnapshot().Where(m => Equals(m.Tags["variant"], "llm-given-up")).ToList();
        Assert.Equal(["retry", "retry", "dead_letter"], ofJob.Select(m => m.Tags["outcome"] as string));
        Assert.All(ofJob, m => Assert.Equal((1L, "ModelServerException"), (m.Value, m.Tags["error"] as string)));
    }

    [Fact]
    public async Task A_tenant_whose_provider_cannot_be_used_has_its_failed_attempts_logged_and_the_last_one_as_an_error()
    {
        using var client = app.Client(app.BrokenProviderTenant);
        using var admin = app.Client(ModularChatApp.NewUser("admin"), app.BrokenProviderTenant, "admin");
        var topic = $"broken-{Guid.NewGuid():N}";
        var (id, failure) = await DeadLetteredAsync(client, admin, topic);

        // What the Providers module says of its stored key (its id, for the owner to set it again).
        var reason = $"The stored API key of provider '{SummariesApp.TenantProviderName}' cannot be decrypted";
        Assert.Contains(reason, failure.ExceptionMessage, StringComparison.Ordinal);
        Assert.Contains($"PUT /api/providers/{app.BrokenProvider}", failure.ExceptionMessage, StringComparison.Ordinal);
        Assert.Equal(
            [(LogLevel.Warning, 1), (LogLevel.Warning, 2), (LogLevel.Error, 3)],
            WriterEntriesAbout(id).Select(e => (e.Level, Attempt: int.Parse(AttemptNumber().Match(e.Message).Groups[1].Value, CultureInfo.InvariantCulture))));
        Assert.Contains(reason, WriterEntriesAbout(id).Last().Exception?.Message, StringComparison.Ordinal);
        Assert.Empty(RequestsAbout(topic)); // the model was never asked
    }

    [Fact]
    public async Task A_model_server_that_echoes_the_key_in_its_error_does_not_get_it_into_the_failure_record()
    {
        var topic = $"echo-{Guid.NewGuid():N}";
        app.Llm.Responder = r => UserText(r).Contains(topic, StringComparison.Ordinal)
            ? FakeReply.Error(401, $"Incorrect API key provided: {SummariesApp.GlobalKey}. You can find your API key at ...")
            : SummaryThroughLastMessage(r);
        using var client = app.Client(app.LlmTenant);
        using var admin = app.Client(ModularChatApp.NewUser("admin"), app.LlmTenant, "admin");
        var (id, failure) = await DeadLetteredAsync(client, admin, topic);

        Assert.Contains("401", failure.ExceptionMessage, StringComparison.Ordinal);
        Assert.Contains("Incorrect API key provided", failure.ExceptionMessage, StringComparison.Ordinal);
        Assert.DoesNotContain(SummariesApp.GlobalKey, failure.ExceptionMessage, StringComparison.Ordinal);
        Assert.Contains(RequestsAbout(topic), r => r.Authorization == "Bearer " + SummariesApp.GlobalKey);
    }

    [Fact]
    public async Task A_tenant_with_its_own_provider_is_summarized_by_its_model()
    {
        app.Llm.Responder = SummaryThroughLastMessage;
        var topic = $"provider-{Guid.NewGuid():N}";
        using var client = app.Client(app.ProviderTenant);
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 10, topic));
        var summary = await client.SummaryCovering(id, 10);

        Assert.Equal(("llm", "tenant-model", "default", "Summary through 10."), (summary.Summarizer, summary.Model, summary.Variant, summary.Text));
        var request = RequestsAbout(topic).Single();
        Assert.Equal("Bearer tenant-key", request.Authorization);
        Assert.Equal("tenant-model", request.Body["model"]?.GetValue<string>());
    }

    [Fact]
    public async Task A_huge_reply_without_a_sentence_end_is_cut_to_the_budget()
    {
        var topic = $"rambling-{Guid.NewGuid():N}";
        app.Llm.Responder = r => UserText(r).Contains(topic, StringComparison.Ordinal)
            ? FakeReply.Text(string.Concat(Enumerable.Repeat("word ", 200_000)))
            : SummaryThroughLastMessage(r);
        using var client = app.Client(app.LlmTenant);
        var id = await client.NewConversation();

        await client.AppendBatch(id, Api.Turns(1, 10, topic));
        var summary = await client.SummaryCovering(id, 10);

        // The llm variant's budget is 60 tokens.
        Assert.InRange(summary.TokenCount, 1, 60);
        Assert.StartsWith("word word", summary.Text, StringComparison.Ordinal);
        Assert.EndsWith("…", summary.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Each_tenants_admin_lists_and_replays_only_the_failed_jobs_of_its_own_tenant()
    {
        var aliceTopic = $"poison-alice-{Guid.NewGuid():N}";
        var bobTopic = $"poison-bob-{Guid.NewGuid():N}";
        var aliceBroken = true;
        app.Llm.Responder = r => UserText(r) is var text
                                 && ((text.Contains(aliceTopic, StringComparison.Ordinal) && Volatile.Read(ref aliceBroken)) || text.Contains(bobTopic, StringComparison.Ordinal))
            ? FakeReply.Error(500, "Model crashed.")
            : SummaryThroughLastMessage(r);
        using var alice = app.Client(app.LlmTenant);
        using var aliceAdmin = app.Client(ModularChatApp.NewUser("admin"), app.LlmTenant, "admin");
        using var bob = app.Client(app.ChunkedLlmTenant);
        using var bobAdmin = app.Client(ModularChatApp.NewUser("admin"), app.ChunkedLlmTenant, "admin");
        // At once: each job's retries wait seconds.
        var aliceDeadLettered = DeadLetteredAsync(alice, aliceAdmin, aliceTopic);
        var bobDeadLettered = DeadLetteredAsync(bob, bobAdmin, bobTopic);
        var (aliceId, _) = await aliceDeadLettered;
        var (bobId, bobFailure) = await bobDeadLettered;

        var aliceSees = await FailuresAsync(aliceAdmin);
        var bobSees = await FailuresAsync(bobAdmin);
        Assert.All(aliceSees.Items, f => Assert.Equal(app.LlmTenant, f.TenantId));
        Assert.DoesNotContain(aliceSees.Items, f => f.ConversationId == bobId);
        Assert.Equal(aliceSees.Items.Count, aliceSees.Total);
        Assert.All(bobSees.Items, f => Assert.Equal(app.ChunkedLlmTenant, f.TenantId));
        Assert.DoesNotContain(bobSees.Items, f => f.ConversationId == aliceId);

        // Another tenant's failure, and an explicit empty list, replay nothing.
        Assert.Equal(0, (await (await aliceAdmin.PostJson(ReplayPath, new { ids = new[] { bobFailure.Id } })).ReadAs<ReplayedDto>(HttpStatusCode.Accepted)).Replayed);
        Assert.Equal(0, (await (await aliceAdmin.PostJson(ReplayPath, new { ids = Array.Empty<Guid>() })).ReadAs<ReplayedDto>(HttpStatusCode.Accepted)).Replayed);

        // No ids: all of alice's tenant, none of bob's.
        Volatile.Write(ref aliceBroken, false);
        var replayed = await (await aliceAdmin.PostJson(ReplayPath, new { })).ReadAs<ReplayedDto>(HttpStatusCode.Accepted);
        Assert.InRange(replayed.Replayed, 1, aliceSees.Total);
        Assert.Equal("Summary through 10.", (await alice.SummaryCovering(aliceId, 10, seconds: 60)).Text);
        var bobsNow = (await FailuresAsync(bobAdmin)).Items.Single(f => f.ConversationId == bobId);
        Assert.Equal((0, false), (bobsNow.ReplayCount, bobsNow.Replayable));
        Assert.Equal(3, RequestsAbout(bobTopic).Count);
    }

    private const string ReplayPath = "/api/admin/summaries/failures/replay";

    private static async Task<FailuresPageDto> FailuresAsync(HttpClient admin)
        => await (await admin.GetAsync("/api/admin/summaries/failures?limit=100")).ReadAs<FailuresPageDto>(HttpStatusCode.OK);

    /// <summary>A conversation about <paramref name="topic"/> reaching its first milestone, and its job once dead-lettered.</summary>
    private static async Task<(Guid Id, FailureDto Failure)> DeadLetteredAsync(HttpClient client, HttpClient admin, string topic)
    {
        var id = await client.NewConversation();
        await client.AppendBatch(id, Api.Turns(1, 10, topic));
        var failure = await Eventually.Until(
            async () => (await (await admin.GetAsync("/api/admin/summaries/failures?limit=100")).ReadAs<FailuresPageDto>(HttpStatusCode.OK)).Items
                .FirstOrDefault(f => f.ConversationId == id),
            f => f is not null);
        return (id, failure!);
    }

    [GeneratedRegex(@"Next messages \((\d+) to (\d+)\)")]
    private static partial Regex Range();

    [GeneratedRegex(@"failed on attempt (\d+)")]
    private static partial Regex AttemptNumber();

    [GeneratedRegex(@"Turn \d+ about")]
    private static partial Regex TurnCount();
}

internal sealed record FailureDto(Guid Id, string? TenantId, Guid ConversationId, string Reason, long UpToSequence, string ExceptionType,
    string ExceptionMessage, DateTimeOffset? FailedAt, int Attempts, int ReplayCount, bool Replayable);

internal sealed record FailuresPageDto(List<FailureDto> Items, int Total, string? NextCursor);

internal sealed record ReplayedDto(int Replayed);
