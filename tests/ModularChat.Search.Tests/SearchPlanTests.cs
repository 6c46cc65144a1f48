using ModularChat.Search.Embeddings;
using ModularChat.Search.Features.Status;
using ModularChat.Search.Searching;
using ModularChat.Search.Storage;
using NpgsqlTypes;

namespace ModularChat.Search.Tests;

/// <summary>
/// Lookups of entries by id, and the keyword search's joins of its best turns back to their entries, stay probes of an
/// index for a tenant that PostgreSQL's statistics do not know yet (<see cref="SearchSchema.TenantParameter"/>): a
/// tenant importing its history is new since the last ANALYZE, and it is estimated at a row or two when the planner
/// can read its id.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class SearchPlanTests(SearchApp app)
{
    [Fact]
    public async Task The_embedding_worker_reads_a_tenant_unknown_to_the_statistics_by_probes_of_the_primary_keys()
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var copy = await ResidentsAsync(connection);
        var scratch = copy.Schema;
        var ids = Enumerable.Range(0, 256).Select(_ => Guid.NewGuid()).ToArray();
        var sql = EmbeddingWorker.ReadSql(new SearchSchema(scratch));

        var plan = await connection.ExplainAsync(sql, "newcomer", ids);
        var visible = await connection.ExplainAsync(sql.Replace(SearchSchema.TenantParameter(1), "$1", StringComparison.Ordinal), "newcomer", ids);

        // Per id: one probe of the entries' primary key (tenant and id), then one of the vectors' (tenant and entry).
        Assert.Contains(plan, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("tenant_id)::text = ($0)::text) AND (id = k.id)", StringComparison.Ordinal));
        Assert.Contains(plan, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("AND (entry_id = x.id)", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, l => l.Contains("Filter", StringComparison.Ordinal) || l.Contains("Seq Scan", StringComparison.Ordinal));
        // The same statement with the tenant visible scans the tenant's entries and filters them by id.
        Assert.Contains(visible, l => l.Contains("Filter: (id = k.id)", StringComparison.Ordinal));

        // The entries the worker share-locks before storing vectors, and the entries of search hits, are found the same way.
        var locked = await connection.ExplainAsync($"select e.id from {new SearchSchema(scratch).EntriesById(1, 2, "for share")}", "newcomer", ids);
        Assert.Contains(locked, l => l.Contains("LockRows", StringComparison.Ordinal));
        Assert.Contains(locked, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("AND (id = k.id)", StringComparison.Ordinal));
        Assert.DoesNotContain(locked, l => l.Contains("Filter", StringComparison.Ordinal) || l.Contains("Seq Scan", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_search_status_of_a_tenant_unknown_to_the_statistics_does_not_match_each_vector_against_all_its_entries()
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var copy = await ResidentsAsync(connection, "mc_search_pending");
        await using var command = GetSearchStatusHandler.Command(new SearchSchema(copy.Schema), "newcomer", "m");

        var plan = await connection.ExplainAsync(command.CommandText, command.Parameters);
        var visible = await connection.ExplainAsync(command.CommandText.Replace(SearchSchema.TenantParameter(1), "$1", StringComparison.Ordinal), command.Parameters);

        // With the tenant visible, each vector was looked for among all of the tenant's entries (100 s for 20,000 of them).
        Assert.Contains(visible, l => l.Contains("Join Filter: (v.entry_id = e.id)", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, l => l.Contains("Join Filter", StringComparison.Ordinal));
    }

    /// <summary>
    /// Copies of the search tables (entries and vectors filled, <paramref name="more"/> empty) whose statistics are
    /// exactly these: 20 tenants of 2,000 entries with a vector each, analyzed before any row of the tenant "newcomer".
    /// </summary>
    private static async Task<ScratchTables> ResidentsAsync(Npgsql.NpgsqlConnection connection, params string[] more)
    {
        var copy = await ScratchTables.CreateAsync(connection, ["mc_search_entries", "mc_search_vectors", .. more]);
        var scratch = copy.Schema;
        await connection.ExecuteAsync($"""
            insert into {scratch}.mc_search_entries (tenant_id, id, conversation_id, kind, sequence, created_at, content, search_vector, lexeme_count)
                select 'resident-' || (g % 20), gen_random_uuid(), gen_random_uuid(), 0, g, now(), 'text', to_tsvector('simple', 'text'), 1
                from generate_series(1, 40000) g;
            insert into {scratch}.mc_search_vectors (tenant_id, entry_id, conversation_id, kind, sequence, created_at, model, dimensions, vector, text_hash, terms)
                select tenant_id, id, conversation_id, kind, sequence, created_at, 'm', 1, '\x00000000', 0, array[]::integer[] from {scratch}.mc_search_entries;
            analyze {scratch}.mc_search_entries;
            analyze {scratch}.mc_search_vectors;
            """);
        return copy;
    }

    [Fact]
    public async Task Keyword_search_for_a_tenant_unknown_to_the_statistics_joins_its_best_turns_back_by_probes()
    {
        await using var connection = await app.OpenConnectionAsync();
        // 20 tenants of 2,000 entries (100 conversations of 20 turns each) analyzed, then a newcomer of the same size.
        await using var copy = await ScratchTables.CreateAsync(connection, "mc_search_entries");
        var scratch = copy.Schema;
        await connection.ExecuteAsync($"""
            insert into {scratch}.mc_search_entries (tenant_id, id, conversation_id, kind, sequence, created_at, content, search_vector, lexeme_count)
                select 'resident-' || (g % 20), gen_random_uuid(), md5('c' || (g % 2000))::uuid, 0, g / 2000 + 1, now(), 'text',
                       to_tsvector('simple', 'word' || (g % 97) || ' word' || (g % 89)), 2
                from generate_series(0, 39999) g;
            analyze {scratch}.mc_search_entries;
            insert into {scratch}.mc_search_entries (tenant_id, id, conversation_id, kind, sequence, created_at, content, search_vector, lexeme_count)
                select 'newcomer', gen_random_uuid(), md5('n' || (g % 100))::uuid, 0, g / 100 + 1, now(), 'text',
                       to_tsvector('simple', 'word' || (g % 97) || ' word' || (g % 89)), 2
                from generate_series(0, 1999) g;
            """);
        var statistics = new KeywordSearch.TermStatistics([("word7", 21)], 2000, 2, 2000);
        await using var command = KeywordSearch.RankCommand(new SearchSchema(scratch), new SearchOptions(), "newcomer", new SearchFilter(), 10,
            statistics.Lexemes, statistics, new NpgsqlTsQueryLexeme("word7"));

        var plan = await connection.ExplainAsync(command.CommandText, command.Parameters);
        var visible = await connection.ExplainAsync(command.CommandText.Replace(SearchSchema.TenantParameter(1), "$1", StringComparison.Ordinal), command.Parameters);

        // The best turns (and summaries) are joined back to their entries by one probe of an index each.
        Assert.Contains(plan, l => l.Contains("Index Cond", StringComparison.Ordinal)
            && l.Contains("AND (conversation_id = scored.conversation_id) AND (sequence = scored.sequence)", StringComparison.Ordinal));
        Assert.Contains(plan, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("AND (id = s.id)", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, l => l.Contains("Join Filter", StringComparison.Ordinal) || l.Contains("Seq Scan", StringComparison.Ordinal));
        // With the tenant visible, each of them is looked for among all of the tenant's entries.
        Assert.Contains(visible, l => l.Contains("Join Filter: ((scored.conversation_id = e.conversation_id)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Keyword_matches_are_fetched_from_the_tenants_part_of_the_text_index()
    {
        await using var connection = await app.OpenConnectionAsync();
        // 4 tenants of 50,000 entries; the searched word is in 1 of 997 entries of each.
        await using var copy = await ScratchTables.CreateAsync(connection, "mc_search_entries");
        await connection.ExecuteAsync($"""
            insert into {copy.Schema}.mc_search_entries (tenant_id, id, conversation_id, kind, sequence, created_at, content, search_vector, lexeme_count)
                select 'tenant-' || (g % 4), gen_random_uuid(), md5('c' || (g % 2000))::uuid, 0, g / 2000 + 1, now(), 'text',
                       to_tsvector('simple', 'word' || (g % 997) || ' common'), 2
                from generate_series(0, 199999) g;
            analyze {copy.Schema}.mc_search_entries;
            """);
        var statistics = new KeywordSearch.TermStatistics([("word7", 50)], 50_000, 2, 50_000);
        await using var command = KeywordSearch.RankCommand(new SearchSchema(copy.Schema), new SearchOptions(), "tenant-1", new SearchFilter(), 10,
            statistics.Lexemes, statistics, new NpgsqlTsQueryLexeme("word7"));

        var plan = await connection.ExplainAsync(command.CommandText, command.Parameters);

        // One scan of the GIN index over (tenant, text) finds the tenant's matches, not every tenant's.
        Assert.Contains(plan, l => l.Contains("Index Cond: (((tenant_id)::text = ($0)::text) AND (search_vector @@ '''word7'''::tsquery))", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, l => l.Contains("BitmapAnd", StringComparison.Ordinal));
    }
}
