using System.Net;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Summaries.Contracts;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Features.Sweep;

namespace ModularChat.Summaries.Tests;

/// <summary>
/// A rebuild (resummarize) after retention archived or deleted covered messages: archived ones are read again from the
/// archive, deleted ones are represented by the summary that covered them, and the revision still stands for 1..N.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class ResummarizeAfterRetentionTests(SummariesApp app)
{
    private static readonly string[] Words =
        ["amber", "birch", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "krypton", "lagoon"];

    private SummarySweep Sweep => app.Host.Services.GetRequiredService<SummarySweep>();

    [Fact]
    public async Task A_rebuild_after_archiving_reads_the_archived_messages_again()
    {
        using var client = app.Client(app.ArchiveTenant);
        var id = await FactsSummarizedAndRetained(client, archived: 7);

        var result = await Sweep.RunAsync(new SweepRequest(Resummarize: true, TenantId: app.ArchiveTenant), null, CancellationToken.None);

        Assert.Equal((1L, 0L), (result.Finished, result.Unfinished));
        var rebuilt = (await client.CurrentSummary(id))!;
        Assert.Equal((2, "resummarize", 1L, 12L), (rebuilt.Revision, rebuilt.Reason, rebuilt.FromSequence, rebuilt.ToSequence));
        Assert.All(Words, w => Assert.Contains(w, rebuilt.Text, StringComparison.Ordinal));
        var context = await (await client.GetAsync($"/api/conversations/{id}/context?maxTokens=100000")).ReadAs<ContextDto>(HttpStatusCode.OK);
        Assert.True(context.Coverage.Complete);
        Assert.All(Words, w => Assert.Contains(w, context.Summary!.Text, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_rebuild_after_deleting_starts_from_the_summary_that_covered_the_deleted_messages()
    {
        using var client = app.Client(app.DeleteTenant);
        var id = await FactsSummarizedAndRetained(client, deleted: 7);

        var result = await Sweep.RunAsync(new SweepRequest(Resummarize: true, TenantId: app.DeleteTenant), null, CancellationToken.None);

        Assert.Equal((1L, 0L), (result.Finished, result.Unfinished));
        var rebuilt = (await client.CurrentSummary(id))!;
        Assert.Equal((2, "resummarize", 1L, 12L), (rebuilt.Revision, rebuilt.Reason, rebuilt.FromSequence, rebuilt.ToSequence));
        Assert.Equal(((int?)1, (long?)8), (rebuilt.BasedOnRevision, rebuilt.ReadFromSequence)); // revision 1's text, then 8-12 read again
        // Facts 1-7 exist nowhere but in revision 1: the rebuild kept them. Facts 8-12, in revision 1 and read again, once.
        Assert.All(Words, w => Assert.Single(System.Text.RegularExpressions.Regex.Matches(rebuilt.Text, $@"\b{w}\b")));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_summary_left_short_of_deleted_messages_by_a_racing_rebuild_goes_on_from_the_revision_that_covers_them(bool newMessages)
    {
        // Retention deleted 1-7 under revision 1 (1-12) while a rebuild, started from nothing before, read messages 1-3 and
        // then stored revision 2 covering only those: messages 4-7 are in revision 1 alone, and every later job failed on them.
        var tenant = newMessages ? app.DeleteTenant : app.DeleteAllTenant;
        using var client = app.Client(tenant);
        var id = newMessages ? await FactsSummarizedAndRetained(client, deleted: 7) : await FactsSummarizedAndRetained(client, deleted: 12);
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(tenant))
        {
            session.Events.Append(SummaryStreams.For(id), 2, new SummaryRevised(id, 2, "Facts one to three were told.", 1, 3, "resummarize",
                "extractive", "none", "v1", "default", 0, 0, TimeSpan.Zero, DateTimeOffset.UtcNow));
            var progress = (await session.LoadAsync<SummaryProgress>(id))!;
            (progress.CoveredTo, progress.Revision) = (3, 2);
            session.Store(progress);
            await session.SaveChangesAsync();
        }

        if (newMessages)
        {
            await client.AppendBatch(id, Enumerable.Range(13, 2).Select(i => (object)new { role = "user", content = $"Fact {i} is about the weather." }));
        }

        (await client.PostAsync($"/api/conversations/{id}/summary", null)).EnsureSuccessStatusCode();

        var last = newMessages ? 14L : 12L;
        var healed = await client.SummaryCovering(id, last);
        Assert.Equal((3, 1L, last), (healed.Revision, healed.FromSequence, healed.ToSequence));
        Assert.All(Words.Take(7), w => Assert.Contains(w, healed.Text, StringComparison.Ordinal)); // told only in revision 1
    }

    [Theory]
    [InlineData("archive")]
    [InlineData("delete")]
    public async Task A_rebuild_of_a_conversation_with_no_hot_message_left_finishes_without_waiting_for_the_job_wait(string policy)
    {
        var tenant = policy == "archive" ? app.ArchiveAllTenant : app.DeleteAllTenant;
        using var client = app.Client(tenant);
        var id = policy == "archive" ? await FactsSummarizedAndRetained(client, archived: 12) : await FactsSummarizedAndRetained(client, deleted: 12);

        var result = await Sweep.RunAsync(new SweepRequest(Resummarize: true, TenantId: tenant), null, CancellationToken.None);

        // Summaries:Sweep:JobWait is 30 s here: a rebuild that never reports would hold the sweep that long and count as unfinished.
        Assert.Equal((1L, 1L, 0L), (result.Queued, result.Finished, result.Unfinished));
        Assert.InRange(result.Duration, TimeSpan.Zero, TimeSpan.FromSeconds(20));
        var current = (await client.CurrentSummary(id))!;
        Assert.Equal(12L, current.ToSequence);
        Assert.All(Words, w => Assert.Contains(w, current.Text, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_rebuild_with_nothing_to_read_again_waits_while_another_job_writes_the_next_revision()
    {
        using var client = app.Client(app.DeleteAllClaimedTenant);
        var id = await FactsSummarizedAndRetained(client, deleted: 12);
        var store = app.Host.Services.GetRequiredService<IDocumentStore>();

        // Another job holds the claim on revision 2 (new messages came and its model is writing): what the rebuild would mark
        // done now, from the progress it read, that job is about to replace.
        var writer = Guid.NewGuid();
        await using (var session = store.LightweightSession(app.DeleteAllClaimedTenant))
        {
            var claim = await session.LoadAsync<SummaryClaim>(id) ?? new SummaryClaim { Id = id };
            (claim.Revision, claim.JobId, claim.Until) = (2, writer, DateTimeOffset.UtcNow.AddMinutes(5));
            session.Store(claim);
            await session.SaveChangesAsync();
        }

        var sweep = Sweep.RunAsync(new SweepRequest(Resummarize: true, TenantId: app.DeleteAllClaimedTenant), null, CancellationToken.None);
        // The rebuild's job ran and found the claim held: it looks again later (a job scheduled ClaimRecheckInterval out),
        // without marking itself done.
        await Eventually.Until(() => app.ScheduledJobsAbout(id), jobs => jobs.Count > 0, Eventually.BackgroundSeconds, "The rebuild's job never backed off");
        Assert.Null((await Progress(store, id))!.RebuildId);

        // The other job is done with it: the rebuild, looking again, marks itself done.
        await using (var session = store.LightweightSession(app.DeleteAllClaimedTenant))
        {
            session.Delete<SummaryClaim>(id);
            await session.SaveChangesAsync();
        }

        var result = await sweep;
        Assert.Equal((1L, 1L, 0L), (result.Queued, result.Finished, result.Unfinished));
        Assert.NotNull((await Progress(store, id))!.RebuildId);
    }

    private async Task<SummaryProgress?> Progress(IDocumentStore store, Guid id)
    {
        await using var session = store.QuerySession(app.DeleteAllClaimedTenant);
        return await session.LoadAsync<SummaryProgress>(id);
    }

    [Fact]
    public async Task After_a_rebuild_a_tiny_append_does_not_make_a_summary_due_by_tokens()
    {
        // Due by tokens only (threshold 60): the 12 facts are well over it, one short message is not.
        using var client = app.Client(app.TokensArchiveTenant);
        var id = await FactsSummarizedAndRetained(client, archived: 7);
        var result = await Sweep.RunAsync(new SweepRequest(Resummarize: true, TenantId: app.TokensArchiveTenant), null, CancellationToken.None);
        Assert.Equal((1L, 0L), (result.Finished, result.Unfinished));
        Assert.Equal(2, (await client.CurrentSummary(id))!.Revision);

        (await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = "ok" })).EnsureSuccessStatusCode();

        var activity = await Eventually.Until(() => Activity(app.TokensArchiveTenant, id), a => a?.LastSequence == 13);
        Assert.True(activity!.PendingUpTo < 13, "a summary job was queued for one short message");
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.Equal(2, (await client.History(id)).Count);
    }

    /// <summary>
    /// Twelve messages, each with its own fact (a code word), in one batch; waits for revision 1 (1-12) and for retention to
    /// archive or delete 1-<paramref name="archived"/> / 1-<paramref name="deleted"/>.
    /// </summary>
    private static async Task<Guid> FactsSummarizedAndRetained(HttpClient client, long archived = 0, long deleted = 0)
    {
        var id = await client.NewConversation("facts");
        await client.AppendBatch(id, Enumerable.Range(1, 12).Select(i => (object)new
        {
            role = i % 2 == 1 ? "user" : "assistant",
            content = $"Fact {i}: the secret code word number {i} is {Words[i - 1]}.",
            createdAt = new DateTimeOffset(2024, 3, 1, 9, 0, 0, TimeSpan.Zero).AddMinutes(i),
        }));
        var first = await client.SummaryCovering(id, 12);
        Assert.Equal(1, first.Revision);
        Assert.All(Words, w => Assert.Contains(w, first.Text, StringComparison.Ordinal));
        await Eventually.Until(
            async () => await (await client.GetAsync($"/api/conversations/{id}/retention")).ReadAs<RetentionDto>(HttpStatusCode.OK),
            v => (archived == 0 || v.Archived.Any(r => r.ToSequence == archived)) && (deleted == 0 || v.Deleted.Any(r => r.ToSequence == deleted)),
            what: "retention");
        return id;
    }

    private async Task<ConversationActivity?> Activity(string tenant, Guid id)
    {
        await using var session = app.Host.Services.GetRequiredService<IDocumentStore>().QuerySession(tenant);
        return await session.LoadAsync<ConversationActivity>(id);
    }

    private sealed record ContextSummaryDto(string Text, long ToSequence);

    private sealed record CoverageDto(bool Complete);

    private sealed record ContextDto(ContextSummaryDto? Summary, CoverageDto Coverage);
}
