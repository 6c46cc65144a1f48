using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Domain;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// What PostgreSQL does with the conversations' statements that could grow with every tenant's data: the list filtered
/// by metadata finds the tenant's matching conversations in one scan of the (tenant, metadata) GIN index, however many
/// other tenants' conversations carry the same pairs; the sweep's tallies read a range of the primary key.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class ConversationQueryPlanTests(ConversationsApp app)
{
    [Fact]
    public async Task The_list_filtered_by_metadata_reads_the_tenants_matches_alone_from_one_index()
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        // 400 tenants of 500 conversations that all carry {"app": "web"}, and a tenant of 20,000 that carry it too, 10 of
        // them with {"user": "b7"}, as PostgreSQL's statistics know them: filtered on a pair of its own, with or without the
        // pair every tenant has. (A small tenant's few conversations are read and filtered: that is cheap either way.)
        // Analyzed from every row: from ANALYZE's usual sample, the estimate of a pair held by 10 rows (and so the plan)
        // changes from run to run.
        await using var copy = await ScratchTables.CreateAsync(connection, "mt_doc_conversation");
        var table = $"{copy.Schema}.mt_doc_conversation";
        await connection.ExecuteAsync($"""
            insert into {table} (tenant_id, id, data, last_activity_at)
                select 'tenant-' || (g % 400), gen_random_uuid(), jsonb_build_object('Metadata', jsonb_build_object('app', 'web', 'user', 'u' || (g % 50))),
                       now() - g * interval '1 second'
                from generate_series(1, 200000) g;
            insert into {table} (tenant_id, id, data, last_activity_at)
                select 'big', gen_random_uuid(), jsonb_build_object('Metadata', jsonb_build_object('app', 'web', 'user', 'b' || (g % 2000))),
                       now() - g * interval '1 second'
                from generate_series(1, 20000) g;
            set default_statistics_target = 10000;
            analyze {table};
            reset default_statistics_target;
            """);
        var store = app.Host.Services.GetRequiredService<IDocumentStore>();

        foreach (var (tenant, pairs) in new[] { ("big", new Dictionary<string, string> { ["user"] = "b7" }), ("big", new() { ["app"] = "web", ["user"] = "b7" }) })
        {
            // The list's own statement (the first page), on the copy.
            await using var session = store.QuerySession(tenant);
            var command = session.Query<Conversation>().WithMetadata(pairs)
                .OrderByDescending(c => c.LastActivityAt).ThenByDescending(c => c.Id).Take(21)
                .ToCommand();
            Assert.Contains("modularchat.mt_doc_conversation", command.CommandText, StringComparison.Ordinal);
            var plan = await connection.ExplainAsync(command.CommandText.Replace("modularchat.mt_doc_conversation", table, StringComparison.Ordinal), command.Parameters);

            // The tenant and the pairs in one index condition, no filter: before, the index held the metadata alone, and the
            // list read every tenant's conversations with those pairs (or the tenant's conversations) and kept the matches.
            Assert.True(plan.Exists(l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("tenant_id", StringComparison.Ordinal)
                && l.Contains("'Metadata'::text) @>", StringComparison.Ordinal)), string.Join('\n', plan));
            Assert.DoesNotContain(plan, l => l.Contains("Filter", StringComparison.Ordinal) || l.Contains("Seq Scan", StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task The_tallies_a_sweep_reads_are_a_range_of_the_primary_key_under_any_plan()
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var copy = await ScratchTables.CreateAsync(connection, "mt_doc_conversation");
        var table = $"{copy.Schema}.mt_doc_conversation";
        await connection.ExecuteAsync($"""
            insert into {table} (tenant_id, id, data, last_activity_at)
                select 'tenant-' || (g % 400), gen_random_uuid(), jsonb_build_object('MessageCount', 5, 'TotalTokens', 50, 'LastActivityAt', now()), now()
                from generate_series(1, 40000) g;
            analyze {table};
            """);

        // As first planned, and as planned once for all executions (Npgsql prepares statements it runs often).
        foreach (var mode in new[] { "force_custom_plan", "force_generic_plan" })
        {
            await connection.ExecuteAsync($"set plan_cache_mode = {mode}");
            IEnumerable<NpgsqlParameter> after = [new("afterTenant", "tenant-200"), new("afterId", Guid.NewGuid()), new("limit", 200)];
            var everyTenant = await connection.ExplainAsync(ConversationMessages.TalliesSql(table, oneTenant: false, afterKey: true), after);
            var oneTenant = await connection.ExplainAsync(ConversationMessages.TalliesSql(table, oneTenant: true, afterKey: true),
                after.Append(new NpgsqlParameter("tenant", "tenant-200")));

            foreach (var plan in new[] { everyTenant, oneTenant })
            {
                Assert.True(plan.Exists(l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("ROW((tenant_id)::text, id) >", StringComparison.Ordinal)),
                    $"{mode}:\n{string.Join('\n', plan)}");
                Assert.DoesNotContain(plan, l => l.Contains("Seq Scan", StringComparison.Ordinal));
            }

            Assert.DoesNotContain(everyTenant, l => l.Contains("Sort", StringComparison.Ordinal));
        }

        await connection.ExecuteAsync("reset plan_cache_mode");
    }
}
