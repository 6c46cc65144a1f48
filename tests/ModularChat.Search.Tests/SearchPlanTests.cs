using ModularChat.Search.Embeddings;
using ModularChat.Search.Features.Status;
using ModularChat.Search.Projection;
using ModularChat.Search.Searching;
using ModularChat.Search.Storage;
using Npgsql;
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
        await using var copy = await ResidentsAsync(connection, "mc_search_pending", "mc_search_models");
        await using var command = GetSearchStatusHandler.Command(new SearchSchema(copy.Schema), app.Store.Options.Events.DatabaseSchemaName, "newcomer", "m", 10_000);

        var plan = await connection.ExplainAsync(command.CommandText, command.Parameters);
        var visible = await connection.ExplainAsync(command.CommandText.Replace(SearchSchema.TenantParameter(1), "$1", StringComparison.Ordinal), command.Parameters);

        // With the tenant visible, each vector was looked for among all of the tenant's entries (100 s for 20,000 of them).
        Assert.Contains(visible, l => l.Contains("Join Filter: (v.entry_id = e.id)", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, l => l.Contains("Join Filter", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_search_status_counts_a_tenants_unread_events_from_its_own_part_of_the_event_index_up_to_the_cap()
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var search = await ScratchTables.CreateAsync(connection, "mc_search_entries", "mc_search_vectors", "mc_search_pending", "mc_search_models");
        await using var events = await ScratchTables.CreateAsync(connection, "mt_events", "mt_event_progression");
        // 20 tenants' 200,000 events analyzed and read by the projection; then another tenant imports 50,000, among which
        // resident-3 appends 5.
        var mtEvents = $"{events.Schema}.mt_events";
        await connection.ExecuteAsync($"""
            insert into {mtEvents} (seq_id, id, stream_id, version, data, type, tenant_id)
                select g, gen_random_uuid(), md5('s' || (g % 2000))::uuid, g / 2000 + 1, '"x"', 'message_appended', 'resident-' || (g % 20)
                from generate_series(1, 200000) g;
            analyze {mtEvents};
            insert into {events.Schema}.mt_event_progression (name, last_seq_id) values ('{SearchEntriesProjection.ProjectionName}:All', 200000);
            insert into {mtEvents} (seq_id, id, stream_id, version, data, type, tenant_id)
                select g, gen_random_uuid(), md5('i' || (g % 100))::uuid, g, '"x"', 'message_appended', case when g % 10000 = 0 then 'resident-3' else 'importer' end
                from generate_series(200001, 250000) g;
            """);

        // As first planned, and as planned once for all executions (Npgsql prepares statements it runs often).
        foreach (var (mode, tenant) in from mode in new[] { "force_custom_plan", "force_generic_plan" }
                                       from tenant in new[] { "resident-3", "importer", "newcomer" }
                                       select (mode, tenant))
        {
            await connection.ExecuteAsync($"set plan_cache_mode = {mode}");
            await using var command = GetSearchStatusHandler.Command(new SearchSchema(search.Schema), events.Schema, tenant, "m", 1000);
            var plan = await connection.ExplainAsync(command.CommandText, command.Parameters);

            // One ordered walk of the tenant's part of the (tenant, sequence) index, from the progression on, that stops at the cap.
            Assert.True(plan.Exists(l => l.Contains(" Scan using mt_events_tenant_id_seq_id", StringComparison.Ordinal)), string.Join('\n', plan));
            Assert.Contains(plan, l => l.Contains("Index Cond: ((ROW(tenant_id, seq_id) > ROW(", StringComparison.Ordinal));
            Assert.DoesNotContain(plan, l => l.Contains("mt_events", StringComparison.Ordinal)
                && (l.Contains("Bitmap", StringComparison.Ordinal) || l.Contains("Seq Scan", StringComparison.Ordinal) || l.Contains("pkey", StringComparison.Ordinal)));
        }

        await connection.ExecuteAsync("reset plan_cache_mode");
        // The plain statement walks every tenant's unread events from the progression on (the primary key) and filters them.
        var plain = await connection.ExplainAsync($"""
            select count(*) from (select 1 from {mtEvents} where tenant_id = $1
                and seq_id > coalesce((select last_seq_id from {events.Schema}.mt_event_progression where name = $2), 0) limit 1000) unread
            """, "resident-3", $"{SearchEntriesProjection.ProjectionName}:All");
        Assert.Contains(plain, l => l.Contains("Filter: ((tenant_id)::text = 'resident-3'::text)", StringComparison.Ordinal));

        Assert.Equal(5, await LagAsync("resident-3"));
        Assert.Equal(1000, await LagAsync("importer")); // 49,995 unread, counted up to the cap
        Assert.Equal(0, await LagAsync("newcomer"));
        Assert.Equal(0, await LagAsync("resident-4"));

        async Task<long> LagAsync(string tenant)
        {
            await using var command = GetSearchStatusHandler.Command(new SearchSchema(search.Schema), events.Schema, tenant, "m", 1000);
            command.Connection = connection;
            await using var reader = await command.ExecuteReaderAsync();
            await reader.ReadAsync();
            return reader.GetInt64(4);
        }
    }

    [Fact]
    public async Task The_embedding_queue_is_claimed_and_dequeued_by_row_address_whatever_its_statistics_say()
    {
        await using var connection = await app.OpenConnectionAsync();
        // The queue as an ANALYZE between two bursts leaves it: analyzed empty over pages that held rows, then 20,000 rows due.
        await using var copy = await ScratchTables.CreateAsync(connection, "mc_search_pending");
        var pending = $"{copy.Schema}.mc_search_pending";
        await connection.ExecuteAsync($"""
            insert into {pending} (tenant_id, entry_id, conversation_id) select 't', gen_random_uuid(), gen_random_uuid() from generate_series(1, 10000);
            delete from {pending};
            analyze {pending};
            insert into {pending} (tenant_id, entry_id, conversation_id, not_before)
                select 't', gen_random_uuid(), gen_random_uuid(), now() - interval '1 hour' + g * interval '1 ms' from generate_series(1, 20000) g;
            """);
        var schema = new SearchSchema(copy.Schema);
        object[] claim = [256, TimeSpan.FromMinutes(5), new[] { "u" }];
        IEnumerable<Npgsql.NpgsqlParameter> claimed = EmbeddingWorker.ClaimParameters(
            [new(new NpgsqlTid(0, 1), "t", Guid.NewGuid(), 0, DateTime.UtcNow), new(new NpgsqlTid(0, 2), "t", Guid.NewGuid(), 0, DateTime.UtcNow)]);

        // The statement the claim replaced, a join on the key, is planned to run its locking subquery once per queued row.
        var joined = await connection.ExplainAsync($"""
            update {pending} p set not_before = now() + $2::interval
            from (select tenant_id, entry_id from {pending} where not_before <= now() order by not_before limit $1 for update skip locked) due
            where p.tenant_id = due.tenant_id and p.entry_id = due.entry_id
            """, claim);
        Assert.Contains(joined, l => l.Contains("Join Filter", StringComparison.Ordinal));

        // As first planned, and as planned once for all executions (Npgsql prepares statements it runs often).
        foreach (var mode in new[] { "force_custom_plan", "force_generic_plan" })
        {
            await connection.ExecuteAsync($"set plan_cache_mode = {mode}");
            var plans = new[]
            {
                await connection.ExplainAsync(EmbeddingWorker.ClaimSql(schema), claim),
                await connection.ExplainAsync(EmbeddingWorker.DequeueSql(schema), claimed),
                await connection.ExplainAsync(EmbeddingWorker.DeferSql(schema), claimed.Append(new Npgsql.NpgsqlParameter { Value = TimeSpan.FromMinutes(1) })),
            };
            foreach (var plan in plans)
            {
                // One fetch per claimed row address; nothing else reads the queue but the claim's walk of the due index.
                Assert.Contains(plan, l => l.Contains("Tid Scan", StringComparison.Ordinal) && !l.Contains("Range", StringComparison.Ordinal));
                Assert.DoesNotContain(plan, l => l.Contains("Seq Scan", StringComparison.Ordinal) || l.Contains("Join", StringComparison.Ordinal)
                    || l.Contains("Nested Loop", StringComparison.Ordinal) || l.Contains("pkey", StringComparison.Ordinal));
            }
        }
    }

    [Fact]
    public async Task The_embedding_queue_is_not_claimed_with_a_plan_made_while_it_was_empty()
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var copy = await ScratchTables.CreateAsync(connection, "mc_search_pending");
        var pending = $"{copy.Schema}.mc_search_pending";
        var statement = $"claim_{Guid.NewGuid():N}";
        // Emptied and vacuumed (to no pages at all), then planned once for all executions, as PostgreSQL does for a statement
        // Npgsql prepared.
        await connection.ExecuteAsync($"insert into {pending} (tenant_id, entry_id, conversation_id) select 't', gen_random_uuid(), gen_random_uuid() from generate_series(1, 1000)");
        await connection.ExecuteAsync($"delete from {pending}");
        await connection.ExecuteAsync($"vacuum {pending}");
        await connection.ExecuteAsync($"""
            prepare {statement}(integer, interval, text[]) as {EmbeddingWorker.ClaimSql(new SearchSchema(copy.Schema))};
            set plan_cache_mode = force_generic_plan;
            """);
        await ExplainClaimAsync();
        await connection.ExecuteAsync($"""
            insert into {pending} (tenant_id, entry_id, conversation_id, not_before)
                select 't', gen_random_uuid(), gen_random_uuid(), now() - interval '1 hour' + g * interval '1 ms' from generate_series(1, 20000) g;
            """);

        // That plan, kept after 20,000 rows came, reads and sorts all of them to lease a few.
        Assert.Contains(await ExplainClaimAsync(), l => l.Contains("Seq Scan", StringComparison.Ordinal));

        // The worker's transactions plan for the queue as it is (with the same session setting).
        await using var transaction = await connection.BeginTransactionAsync();
        await connection.ExecuteAsync(EmbeddingWorker.PlannedForThisQueue);
        var plan = await ExplainClaimAsync();
        Assert.Contains(plan, l => l.Contains("Index Scan using", StringComparison.Ordinal) && l.Contains("not_before", StringComparison.Ordinal));
        Assert.Contains(plan, l => l.Contains("Tid Scan", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, l => l.Contains("Seq Scan", StringComparison.Ordinal));
        await transaction.RollbackAsync();
        await connection.ExecuteAsync($"deallocate {statement}; reset plan_cache_mode");

        async Task<List<string>> ExplainClaimAsync()
        {
            await using var explain = new Npgsql.NpgsqlCommand($"explain (costs off) execute {statement}(256, '5 minutes', '{{u}}')", connection);
            return await explain.ReadStringsAsync();
        }
    }

    [Fact]
    public async Task A_metadata_filter_reads_the_tenants_matches_alone_from_one_index()
    {
        await using var connection = await app.OpenConnectionAsync();
        // 20 tenants of 10,000 entries that all carry {"app": "web"}, and a tenant of 20,000 that carry it too, 10 of them with
        // {"user": "b7"}: filtered on the pair every tenant has, or on one of its own. Analyzed from every row: from
        // ANALYZE's usual sample, the estimate of a pair held by 10 rows changes from run to run. (With 2,000 entries a
        // tenant, reading the whole table cost about as much as the index in PostgreSQL's estimate, and a CI run got that
        // plan: GIN's estimate counts every entry of the large tenant's key.)
        await using var copy = await ScratchTables.CreateAsync(connection, "mc_search_entries");
        var entries = $"{copy.Schema}.mc_search_entries";
        await connection.ExecuteAsync($"""
            insert into {entries} (tenant_id, id, conversation_id, kind, sequence, created_at, content, search_vector, lexeme_count, metadata)
                select 'resident-' || (g % 20), gen_random_uuid(), gen_random_uuid(), 0, g, now(), 'text', to_tsvector('simple', 'text'), 1,
                       jsonb_build_object('app', 'web', 'user', 'u' || (g % 50))
                from generate_series(1, 200000) g;
            insert into {entries} (tenant_id, id, conversation_id, kind, sequence, created_at, content, search_vector, lexeme_count, metadata)
                select 'big', gen_random_uuid(), gen_random_uuid(), 0, g, now(), 'text', to_tsvector('simple', 'text'), 1,
                       jsonb_build_object('app', 'web', 'user', 'b' || (g % 2000))
                from generate_series(1, 20000) g;
            set default_statistics_target = 10000;
            analyze {entries};
            reset default_statistics_target;
            """);

        foreach (var (tenant, pairs) in new[] { ("big", """{"user": "b7"}"""), ("big", """{"app": "web", "user": "b7"}""") })
        {
            IEnumerable<NpgsqlParameter> values = [new() { Value = tenant }, new() { Value = pairs, NpgsqlDbType = NpgsqlDbType.Jsonb }];
            var plan = await connection.ExplainAsync(KeywordSearch.WithMetadataSql(new SearchSchema(copy.Schema)), values);

            // The tenant and the pairs in one index condition: before, the index held the metadata alone, and a filter read
            // every tenant's entries with those pairs (or the tenant's entries) and kept the matches.
            Assert.True(plan.Exists(l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("tenant_id", StringComparison.Ordinal)
                && l.Contains("metadata @>", StringComparison.Ordinal)), string.Join('\n', plan));
            Assert.DoesNotContain(plan, l => l.Contains("Filter", StringComparison.Ordinal) || l.Contains("Seq Scan", StringComparison.Ordinal));
        }
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

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // a filter on the hits orders the matches by whether they fit it before the budget's cut
    public async Task Keyword_search_for_a_tenant_unknown_to_the_statistics_joins_its_best_turns_back_by_probes(bool filtered)
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
        await using var command = KeywordSearch.RankCommand(new SearchSchema(scratch), new SearchOptions(), "newcomer",
            filtered ? new SearchFilter(Role: "user", From: DateTimeOffset.UnixEpoch) : new SearchFilter(), 10,
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
    public async Task A_deleted_conversation_takes_its_entries_off_the_embedding_queue_without_reading_the_tenants_whole_queue()
    {
        await using var connection = await app.OpenConnectionAsync();
        // 20 tenants of 2,000 entries (100 conversations each), every one waiting for its vector (an embedding model away),
        // and 200,000 more queued rows of other tenants.
        await using var copy = await ScratchTables.CreateAsync(connection, "mc_search_entries", "mc_search_pending");
        var scratch = copy.Schema;
        await connection.ExecuteAsync($"""
            insert into {scratch}.mc_search_entries (tenant_id, id, conversation_id, kind, sequence, created_at, content, search_vector, lexeme_count)
                select 'resident-' || (g % 20), gen_random_uuid(), md5('c' || (g % 2000))::uuid, 0, g / 2000 + 1, now(), 'text', to_tsvector('simple', 'text'), 1
                from generate_series(0, 39999) g;
            insert into {scratch}.mc_search_pending (tenant_id, entry_id, conversation_id)
                select tenant_id, id, conversation_id from {scratch}.mc_search_entries;
            insert into {scratch}.mc_search_pending (tenant_id, entry_id, conversation_id)
                select 'importer-' || (g % 5), gen_random_uuid(), md5('i' || (g % 1000))::uuid from generate_series(1, 200000) g;
            analyze {scratch}.mc_search_entries;
            analyze {scratch}.mc_search_pending;
            """);
        var placeholder = 0;
        var sql = System.Text.RegularExpressions.Regex.Replace(SearchRemovals.ConversationPendingSql(new SearchSchema(scratch)), @"\^", _ => $"${++placeholder}");

        var conversation = Guid.Parse(Convert.ToHexString(System.Security.Cryptography.MD5.HashData("c3"u8))); // md5('c3')::uuid, of resident-3

        var plan = await connection.ExplainAsync(sql, "resident-3", conversation);

        // The conversation's entries from their index, then a probe of the queue's primary key each. Before, the tenant's
        // part of the queue (by the primary key's tenant prefix), filtered by conversation.
        Assert.Contains(plan, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("entry_id = e.id", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, l => l.Contains("Seq Scan", StringComparison.Ordinal));
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
