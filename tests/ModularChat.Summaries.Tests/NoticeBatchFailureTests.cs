using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Tests;

/// <summary>
/// A batch of append notices (one transaction per batch and tenant) that fails: lost races with another node retried at once,
/// other failures retried after a pause, and a batch given up logged once by the module, naming its conversations, and counted.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class NoticeBatchFailureTests(SummariesApp app)
{
    [Fact]
    public async Task A_batch_that_keeps_losing_races_is_dead_lettered_with_one_error_naming_its_conversation_and_counted_once()
    {
        var meters = app.Host.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var failures = new MetricCollector<long>(meters, ModularChatTelemetry.SourceName, MetricNames.SummaryNoticeFailures);
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        var entriesBefore = app.Logs.Entries.Count();
        // Another node inserted the conversation's activity first, at each of the batch's six attempts: the first and its
        // five retries at once all lose the race.
        await using (await app.RefuseFirstWritesAsync(ActivityTable(), $"new.id = '{id}'", [.. Enumerable.Repeat(LostRace, 6)]))
        {
            await client.AppendBatch(id, Api.Turns(1, 2));
            await Eventually.Until(() => Task.FromResult(ErrorsAbout(id, entriesBefore).Count), n => n > 0, 60, $"an error naming conversation {id}");
        }

        var error = Assert.Single(ErrorsAbout(id, entriesBefore));
        Assert.Contains(tenant, error.Message, StringComparison.Ordinal);
        Assert.Contains("1 append", error.Message, StringComparison.Ordinal);
        Assert.Contains("sweep", error.Message, StringComparison.Ordinal);
        Assert.Contains(Exceptions.Flatten(error.Exception!), e => e is JasperFx.DocumentAlreadyExistsException);

        // Each lost race retried at once is one line naming the conversation, without a stack trace.
        var races = NewEntries(entriesBefore).Where(e => e.Level == LogLevel.Information && e.Message.Contains(id.ToString(), StringComparison.Ordinal)
            && e.Message.Contains("lost a race", StringComparison.Ordinal)).ToList();
        Assert.Equal(5, races.Count);
        Assert.All(races, e => Assert.Null(e.Exception));

        // Wolverine's own entries for the batch's attempts and its dead-lettering stay below Warning.
        Assert.DoesNotContain(NewEntries(entriesBefore), e => e.Level is >= LogLevel.Warning and < LogLevel.None
            && e.Category.StartsWith("Wolverine", StringComparison.Ordinal) && e.Message.Contains("AppendsCommitted", StringComparison.Ordinal));

        var counted = failures.GetMeasurementSnapshot().Where(m => Equals(m.Tags["error"], nameof(JasperFx.DocumentAlreadyExistsException))).ToList();
        Assert.Equal([.. Enumerable.Repeat("conflict", 5), "dead_letter"], counted.Select(m => m.Tags["outcome"] as string));
        Assert.All(counted, m => Assert.Equal((1L, "default"), (m.Value, m.Tags["variant"] as string)));
    }

    [Fact]
    public async Task A_batch_that_fails_otherwise_is_retried_after_a_pause_and_nothing_is_lost_once_the_failure_goes_away()
    {
        var meters = app.Host.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var failures = new MetricCollector<long>(meters, ModularChatTelemetry.SourceName, MetricNames.SummaryNoticeFailures);
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        var entriesBefore = app.Logs.Entries.Count();
        // PostgreSQL refuses the batch's first two writes of the conversation's activity (neither a lost race nor the
        // database away: it answers), then lets the third attempt through.
        var refused = $"activity write refused ({id:N})";
        await using (await app.RefuseFirstWritesAsync(ActivityTable(), $"new.id = '{id}'", $"raise exception '{refused}'", $"raise exception '{refused}'"))
        {
            // Ten messages in one append: the first milestone, so the notice queues the first summary.
            await client.AppendBatch(id, Api.Turns(1, 10));
            Assert.Equal(10, (await client.SummaryCovering(id, 10, seconds: 60)).ToSequence);
        }

        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().QuerySession(tenant))
        {
            var activity = await session.LoadAsync<ConversationActivity>(id);
            Assert.Equal((10L, 10L), (activity!.LastSequence, activity.CountedTo));
        }

        // Marten's entries for the refused command (with its parameters) are about the command (ConcurrencyLogTests).
        var retries = NewEntries(entriesBefore).Where(e => e.Level is >= LogLevel.Warning and < LogLevel.None && !e.Category.StartsWith("Marten", StringComparison.Ordinal)
            && e.Message.Contains(id.ToString(), StringComparison.Ordinal)).ToList();
        Assert.Equal(2, retries.Count);
        Assert.All(retries, e =>
        {
            Assert.Equal(LogLevel.Warning, e.Level);
            Assert.Contains(tenant, e.Message, StringComparison.Ordinal);
            Assert.Contains("retried in", e.Message, StringComparison.Ordinal);
            Assert.Contains(Exceptions.Flatten(e.Exception!), x => x.Message.Contains(refused, StringComparison.Ordinal));
        });
        Assert.DoesNotContain(NewEntries(entriesBefore), e => e.Level is >= LogLevel.Warning and < LogLevel.None
            && e.Category.StartsWith("Wolverine", StringComparison.Ordinal) && e.Message.Contains("AppendsCommitted", StringComparison.Ordinal));

        var counted = failures.GetMeasurementSnapshot().Where(m => Equals(m.Tags["error"], retries[0].Exception!.GetType().Name)).ToList();
        Assert.Equal(["retry", "retry"], counted.Select(m => m.Tags["outcome"] as string));
    }

    /// <summary>
    /// What PostgreSQL answers an insert of a conversation's activity that another node inserted first (a unique violation
    /// on the document's table, which Marten reads as <see cref="JasperFx.DocumentAlreadyExistsException"/>).
    /// </summary>
    private const string LostRace =
        "raise exception 'duplicate key value violates unique constraint \"pkey_mt_doc_conversationactivity_tenant_id_id\"' " +
        "using errcode = 'unique_violation', table = 'mt_doc_conversationactivity', constraint = 'pkey_mt_doc_conversationactivity_tenant_id_id'";

    private string ActivityTable() => app.Host.Services.GetRequiredService<IDocumentStore>().Options.Schema.For<ConversationActivity>();

    private IEnumerable<LogEntry> NewEntries(int before) => app.Logs.Entries.Skip(before);

    /// <summary>The errors logged since entry <paramref name="before"/> that name conversation <paramref name="id"/> (Marten's about its commands aside).</summary>
    private List<LogEntry> ErrorsAbout(Guid id, int before)
        => NewEntries(before).Where(e => e.Level is >= LogLevel.Error and < LogLevel.None && !e.Category.StartsWith("Marten", StringComparison.Ordinal)
            && e.Message.Contains(id.ToString(), StringComparison.Ordinal)).ToList();
}
