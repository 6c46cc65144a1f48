using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Features.Sweep;
using Npgsql;

namespace ModularChat.Summaries.Tests;

/// <summary>
/// A sweep reads the activity read model a page at a time in its primary key's order (tenant, conversation): every
/// conversation of every tenant once, each page a range of the index, so its work grows with the conversations, not
/// with their square.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class SweepPagingTests(SummariesApp app)
{
    [Fact]
    public async Task A_sweep_over_every_tenant_in_pages_of_two_examines_each_conversation_once_and_rebuilds_it()
    {
        // A node alone on an empty database, reading 2 activity rows at a time: 3 tenants of 2, 3 and 1 conversations make
        // pages that end inside a tenant and at its end.
        var database = await app.EmptyDatabaseOfItsOwnAsync("sweep_pages");
        await using var node = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Postgres"] = database,
            ["Summaries:Sweep:BatchSize"] = "2",
        });
        var conversations = new List<(HttpClient Client, Guid Id)>();
        foreach (var count in new[] { 2, 3, 1 })
        {
            var client = app.Client(node, ModularChatApp.NewUser("pages"));
            for (var i = 0; i < count; i++)
            {
                var id = await client.NewConversation();
                await client.AppendEach(id, Api.Turns(1, 3)); // below the first milestone: no summary of its own
                conversations.Add((client, id));
            }
        }

        var store = node.Services.GetRequiredService<IDocumentStore>();
        await Eventually.Until(() => FollowedAsync(store), n => n == conversations.Count, what: "every conversation's activity at 3 messages");

        var reports = new List<SweepProgress>();
        var result = await node.Services.GetRequiredService<SummarySweep>().RunAsync(new SweepRequest(Resummarize: true), reports.Add, CancellationToken.None);

        Assert.Equal((6L, 6L, 6L, 0L), (result.Examined, result.Queued, result.Finished, result.Unfinished));
        Assert.Equal([2L, 4L, 6L], reports.Select(r => r.Examined).Distinct());
        foreach (var (client, id) in conversations)
        {
            var summary = await client.CurrentSummary(id);
            Assert.NotNull(summary);
            Assert.Equal(("resummarize", 1L, 3L), (summary.Reason, summary.FromSequence, summary.ToSequence));
        }

        foreach (var client in conversations.Select(c => c.Client).Distinct())
        {
            client.Dispose();
        }
    }

    [Fact]
    public async Task Each_page_and_each_look_at_the_queued_jobs_reads_ranges_and_probes_of_the_primary_keys()
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        // Copies of both tables with 40,000 conversations of 400 tenants, most of them summarized, as PostgreSQL's
        // statistics know them.
        await using var copy = await ScratchTables.CreateAsync(connection, "mt_doc_conversationactivity", "mt_doc_summaryprogress");
        var (activity, progress) = ($"{copy.Schema}.mt_doc_conversationactivity", $"{copy.Schema}.mt_doc_summaryprogress");
        await connection.ExecuteAsync($"""
            insert into {activity} (tenant_id, id, data, pending_up_to)
                select 'tenant-' || (g % 400), gen_random_uuid(), jsonb_build_object('LastSequence', 30), 0 from generate_series(1, 40000) g;
            insert into {progress} (tenant_id, id, data, covered_to)
                select tenant_id, id, jsonb_build_object('CoveredTo', 25), 25 from {activity} where random() < 0.8;
            analyze {activity};
            analyze {progress};
            """);
        IEnumerable<NpgsqlParameter> after = [new NpgsqlParameter("afterTenant", "tenant-200"), new NpgsqlParameter("afterId", Guid.NewGuid()), new NpgsqlParameter("limit", 200)];

        var everyTenant = await connection.ExplainAsync(SummarySweep.PageSql(activity, progress, oneTenant: false), after);
        var oneTenant = await connection.ExplainAsync(SummarySweep.PageSql(activity, progress, oneTenant: true),
            after.Append(new NpgsqlParameter("tenant", "tenant-200")));
        IEnumerable<NpgsqlParameter> inFlight = [new("tenants", new[] { "tenant-1", "tenant-2" }), new("ids", new[] { Guid.NewGuid(), Guid.NewGuid() })];
        var settle = await connection.ExplainAsync(SummarySweep.SettleSql(activity, progress), inFlight);

        // Every tenant's page: a range of the activity's primary key after the last page's (tenant, id), in its order (no
        // sort), then a probe of the progress' primary key per row.
        Assert.Contains(everyTenant, l => l.Contains("Index Scan using", StringComparison.Ordinal) && l.Contains("mt_doc_conversationactivity", StringComparison.Ordinal));
        Assert.Contains(everyTenant, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("ROW((tenant_id)::text, id) >", StringComparison.Ordinal));
        Assert.DoesNotContain(everyTenant, l => l.Contains("Sort", StringComparison.Ordinal));
        // One tenant's: the same range within the tenant (its rows after the key, sorted when there are few of them).
        Assert.Contains(oneTenant, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("ROW((tenant_id)::text, id) >", StringComparison.Ordinal)
            && l.Contains("((tenant_id)::text = 'tenant-200'::text)", StringComparison.Ordinal));
        foreach (var page in new[] { everyTenant, oneTenant })
        {
            Assert.Contains(page, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("(id = a.id)", StringComparison.Ordinal));
            Assert.DoesNotContain(page, l => l.Contains("Seq Scan", StringComparison.Ordinal));
        }

        // The jobs in flight: one probe of each primary key per (tenant, conversation).
        Assert.Contains(settle, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("(id = k.id)", StringComparison.Ordinal)
            && l.Contains("k.tenant_id", StringComparison.Ordinal));
        Assert.DoesNotContain(settle, l => l.Contains("Seq Scan", StringComparison.Ordinal));
    }

    /// <summary>Conversations whose activity row counts their 3 messages.</summary>
    private static async Task<int> FollowedAsync(IDocumentStore store)
    {
        await using var session = store.QuerySession();
        return await session.Query<ConversationActivity>().Where(a => a.AnyTenant() && a.LastSequence == 3).CountAsync();
    }
}
