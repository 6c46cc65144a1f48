using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using ModularChat.Summaries.Contracts;
using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Tests;

/// <summary>What Marten logs when a write loses a concurrency race (routine between nodes) and when a command fails otherwise.</summary>
[Collection(AppCollection.Name)]
public sealed class ConcurrencyLogTests(SummariesApp app)
{
    [Fact]
    public async Task A_write_that_loses_a_concurrency_race_is_no_error_in_Marten_s_log_but_a_failed_command_still_is()
    {
        var store = app.Host.Services.GetRequiredService<IDocumentStore>();
        var tenant = ModularChatApp.NewUser();
        var conversation = Guid.NewGuid();
        var stream = SummaryStreams.For(conversation);
        // Only what this test's commands log: the host's background work (the projection daemon, queued jobs, what earlier
        // tests left running) logs into the same capture meanwhile, and an error of its own is not what is tested here.
        var mark = $"concurrency-log-{Guid.NewGuid():N}";
        using var _ = CapturedLogs.Mark(mark);

        await using (var first = store.LightweightSession(tenant))
        {
            first.Events.StartStream(stream, Revised(conversation, 1));
            first.Insert(new SummaryProgress { Id = conversation, CoveredTo = 2, Revision = 1 });
            await first.SaveChangesAsync();
        }

        // The same stream started twice, an append at a version another writer took, the same document inserted twice.
        await using (var session = store.LightweightSession(tenant))
        {
            session.Events.StartStream(stream, Revised(conversation, 1));
            await Assert.ThrowsAnyAsync<Exception>(() => session.SaveChangesAsync());
        }

        await using (var session = store.LightweightSession(tenant))
        {
            session.Events.Append(stream, 1, Revised(conversation, 1));
            await Assert.ThrowsAnyAsync<Exception>(() => session.SaveChangesAsync());
        }

        await using (var session = store.LightweightSession(tenant))
        {
            session.Insert(new SummaryProgress { Id = conversation, CoveredTo = 2, Revision = 1 });
            await Assert.ThrowsAnyAsync<Exception>(() => session.SaveChangesAsync());
        }

        Assert.DoesNotContain(MartenErrors(mark), e => true);

        await using (var session = store.LightweightSession(tenant))
        {
            session.QueueSqlCommand("select 1 / 0");
            await Assert.ThrowsAnyAsync<Exception>(() => session.SaveChangesAsync());
        }

        Assert.Contains(MartenErrors(mark), e => e.Exception?.Message.Contains("division by zero", StringComparison.Ordinal) == true);
    }

    private List<LogEntry> MartenErrors(string mark)
        => app.Logs.Entries.Where(e => e.Mark == mark && e.Category.StartsWith("Marten", StringComparison.Ordinal) && e.Level is LogLevel.Error or LogLevel.Critical).ToList();

    private static SummaryRevised Revised(Guid conversation, int revision)
        => new(conversation, revision, "A summary.", 1, 2, "manual", "extractive", "none", "v1", "default", 0, 0, TimeSpan.Zero, DateTimeOffset.UtcNow);
}
