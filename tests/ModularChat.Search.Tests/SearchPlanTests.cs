using ModularChat.Search.Embeddings;
using ModularChat.Search.Storage;
using Npgsql;

namespace ModularChat.Search.Tests;

/// <summary>
/// Lookups of entries by id stay probes of the primary key for a tenant that PostgreSQL's statistics do not know yet
/// (<see cref="SearchSchema.TenantParameter"/>): a tenant importing its history is new since the last ANALYZE, and
/// it is estimated at a row or two when the planner can read its id.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class SearchPlanTests(SearchApp app)
{
    [Fact]
    public async Task The_embedding_worker_reads_a_tenant_unknown_to_the_statistics_by_probes_of_the_primary_keys()
    {
        await using var connection = await app.OpenConnectionAsync();
        var scratch = $"plan_{Guid.NewGuid():N}";
        // Copies of the entries and vectors tables (same columns and indexes) in a schema of their own, so that their
        // statistics are exactly these: 20 tenants of 2,000 entries, analyzed before the newcomer's first row.
        await Execute(connection, $"""
            create schema {scratch};
            create table {scratch}.mc_search_entries (like modularchat.mc_search_entries including all);
            create table {scratch}.mc_search_vectors (like modularchat.mc_search_vectors including all);
            insert into {scratch}.mc_search_entries (tenant_id, id, conversation_id, kind, sequence, created_at, content, search_vector, lexeme_count)
                select 'resident-' || (g % 20), gen_random_uuid(), gen_random_uuid(), 0, g, now(), 'text', to_tsvector('simple', 'text'), 1
                from generate_series(1, 40000) g;
            insert into {scratch}.mc_search_vectors (tenant_id, entry_id, conversation_id, kind, sequence, created_at, model, dimensions, vector, text_hash, terms)
                select tenant_id, id, conversation_id, kind, sequence, created_at, 'm', 1, '\x00000000', 0, array[]::integer[] from {scratch}.mc_search_entries;
            analyze {scratch}.mc_search_entries;
            analyze {scratch}.mc_search_vectors;
            """);
        try
        {
            var ids = Enumerable.Range(0, 256).Select(_ => Guid.NewGuid()).ToArray();
            var sql = EmbeddingWorker.ReadSql(new SearchSchema(scratch));

            var plan = await Explain(connection, sql, "newcomer", ids);
            var visible = await Explain(connection, sql.Replace(SearchSchema.TenantParameter(1), "$1", StringComparison.Ordinal), "newcomer", ids);

            // Per id: one probe of the entries' primary key (tenant and id), then one of the vectors' (tenant and entry).
            Assert.Contains(plan, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("tenant_id)::text = ($0)::text) AND (id = k.id)", StringComparison.Ordinal));
            Assert.Contains(plan, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("AND (entry_id = x.id)", StringComparison.Ordinal));
            Assert.DoesNotContain(plan, l => l.Contains("Filter", StringComparison.Ordinal) || l.Contains("Seq Scan", StringComparison.Ordinal));
            // The same statement with the tenant visible scans the tenant's entries and filters them by id.
            Assert.Contains(visible, l => l.Contains("Filter: (id = k.id)", StringComparison.Ordinal));

            // The entries the worker share-locks before storing vectors, and the entries of search hits, are found the same way.
            var locked = await Explain(connection, $"select e.id from {new SearchSchema(scratch).EntriesById(1, 2, "for share")}", "newcomer", ids);
            Assert.Contains(locked, l => l.Contains("LockRows", StringComparison.Ordinal));
            Assert.Contains(locked, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("AND (id = k.id)", StringComparison.Ordinal));
            Assert.DoesNotContain(locked, l => l.Contains("Filter", StringComparison.Ordinal) || l.Contains("Seq Scan", StringComparison.Ordinal));
        }
        finally
        {
            await Execute(connection, $"drop schema {scratch} cascade");
        }
    }

    private static async Task Execute(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>The plan of one execution with these values (as the first executions of the statement are planned).</summary>
    private static async Task<List<string>> Explain(NpgsqlConnection connection, string sql, string tenantId, Guid[] ids)
    {
        await using var command = new NpgsqlCommand($"explain (costs off) {sql}", connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenantId });
        command.Parameters.Add(new NpgsqlParameter { Value = ids });
        var plan = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            plan.Add(reader.GetString(0));
        }

        return plan;
    }
}
