using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Features.Sweep;
using Npgsql;

namespace ModularChat.Summaries.Tests;

/// <summary>
/// The backlog gauge counts the conversations with a job pending above their coverage from the pending marks alone: a
/// revision clears the mark it covers, so the count reads the backlog, not every conversation.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class BacklogCountTests(SummariesApp app)
{
    [Fact]
    public async Task A_revision_clears_the_pending_mark_it_covers()
    {
        var tenant = ModularChatApp.NewUser("backlog");
        using var client = app.Client(tenant);
        var id = await client.NewConversation();
        await client.AppendEach(id, Api.Turns(1, 10)); // milestone 10: a job is queued, its mark 10

        await client.SummaryCovering(id, 10);

        var activity = await Eventually.Until(() => ActivityAsync(tenant, id), a => a?.PendingUpTo == 0, what: "the pending mark cleared by the revision");
        Assert.Equal(10, activity!.LastSequence);
    }

    [Fact]
    public async Task The_count_reads_the_pending_marks_from_their_index_and_counts_those_above_the_coverage()
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        // 40,000 conversations summarized (marks cleared), then 4 with a mark: above the coverage (2, one never summarized),
        // at it (left by an older build, or a notice's batch that stored the row again), below it.
        await using var copy = await ScratchTables.CreateAsync(connection, "mt_doc_conversationactivity", "mt_doc_summaryprogress");
        var (activity, progress) = ($"{copy.Schema}.mt_doc_conversationactivity", $"{copy.Schema}.mt_doc_summaryprogress");
        await connection.ExecuteAsync($"""
            insert into {activity} (tenant_id, id, data, pending_up_to)
                select 'tenant-' || (g % 400), gen_random_uuid(), jsonb_build_object(), 0 from generate_series(1, 40000) g;
            insert into {progress} (tenant_id, id, data, covered_to) select tenant_id, id, jsonb_build_object(), 25 from {activity};
            insert into {activity} (tenant_id, id, data, pending_up_to) values
                ('a', '00000000-0000-0000-0000-000000000001', jsonb_build_object(), 50), ('a', '00000000-0000-0000-0000-000000000002', jsonb_build_object(), 10),
                ('b', '00000000-0000-0000-0000-000000000003', jsonb_build_object(), 25), ('b', '00000000-0000-0000-0000-000000000004', jsonb_build_object(), 10);
            insert into {progress} (tenant_id, id, data, covered_to) values
                ('a', '00000000-0000-0000-0000-000000000001', jsonb_build_object(), 25), ('b', '00000000-0000-0000-0000-000000000003', jsonb_build_object(), 25),
                ('b', '00000000-0000-0000-0000-000000000004', jsonb_build_object(), 25);
            analyze {activity};
            analyze {progress};
            """);
        var sql = SummaryBacklogMonitor.CountSql(activity, progress);

        var plan = await connection.ExplainAsync(sql);
        await using var count = new NpgsqlCommand(sql, connection);

        Assert.Equal(2L, await count.ExecuteScalarAsync());
        Assert.True(plan.Exists(l => l.Contains("Index", StringComparison.Ordinal) && l.Contains("pending_up_to", StringComparison.Ordinal)), string.Join('\n', plan));
        Assert.DoesNotContain(plan, l => l.Contains("Seq Scan", StringComparison.Ordinal));
    }

    private async Task<ConversationActivity?> ActivityAsync(string tenant, Guid id)
    {
        await using var session = app.Host.Services.GetRequiredService<IDocumentStore>().QuerySession(tenant);
        return await session.LoadAsync<ConversationActivity>(id);
    }
}
