using JasperFx.Events;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Contracts;
using ModularChat.Search.Searching;
using ModularChat.Search.Storage;
using Npgsql;
using static ModularChat.Search.Tests.SearchApp;

namespace ModularChat.Search.Tests;

/// <summary>
/// A keyword search reads the tenant's entry count and lexeme total from its totals per kind (<c>mc_search_totals</c>),
/// which triggers on the per-conversation statistics keep; before, it added up one statistics row per conversation of
/// the tenant on every search.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class SearchTotalsTests(SearchApp app)
{
    [Fact]
    public async Task The_tenants_totals_follow_its_entries_through_indexing_retention_and_deletion()
    {
        var tenant = ModularChatApp.NewUser("totals");
        var projection = app.Projection(app.Host.Services.GetRequiredService<IConversationMessages>);
        Guid first = Guid.NewGuid(), second = Guid.NewGuid();
        await app.ApplyPageAsync(tenant, projection,
            [Appended(first, "alpha bravo charlie"), Appended(first, "delta echo", 2), Appended(second, "foxtrot golf")]);

        var indexed = await EntriesAsync(tenant);
        Assert.Equal(3, indexed.Documents);
        Assert.Equal(indexed, await TotalsAsync(tenant));
        // What a search reads: the tenant's size, and its scope's (one conversation, or one kind).
        Assert.Equal((3, indexed.Lexemes, 3), await SearchStatisticsAsync(tenant, new SearchFilter()));
        Assert.Equal((3, indexed.Lexemes, 2), await SearchStatisticsAsync(tenant, new SearchFilter(ConversationId: first)));
        Assert.Equal((3, indexed.Lexemes, 1), await SearchStatisticsAsync(tenant, new SearchFilter(ConversationIds: [second, Guid.NewGuid()])));
        Assert.Equal((3, indexed.Lexemes, 0), await SearchStatisticsAsync(tenant, new SearchFilter(ConversationId: first, ConversationIds: [second])));
        Assert.Equal((3, indexed.Lexemes, 0), await SearchStatisticsAsync(tenant, new SearchFilter(Scope: SearchScope.Summaries)));

        // Retention deletes the first conversation's first message for good.
        await app.ApplyPageAsync(tenant, projection,
            [new Event<RetentionApplied>(new RetentionApplied(first, RetentionAction.Deleted, 1, 1, 1, 100, "delete", 1, DateTimeOffset.UtcNow))]);
        var retained = await EntriesAsync(tenant);
        Assert.Equal(2, retained.Documents);
        Assert.Equal(retained, await TotalsAsync(tenant));
        Assert.Equal((2, retained.Lexemes, 1), await SearchStatisticsAsync(tenant, new SearchFilter(ConversationId: first)));

        await app.ApplyPageAsync(tenant, projection, [Deleted(second)]);
        var left = await EntriesAsync(tenant);
        Assert.Equal(1, left.Documents);
        Assert.Equal(left, await TotalsAsync(tenant));

        // The tenant's last conversation gone, nothing of it stays in the totals.
        await app.ApplyPageAsync(tenant, projection, [Deleted(first)]);
        await using var connection = await app.OpenConnectionAsync();
        Assert.Equal(0, await connection.ScalarAsync("select count(*) from modularchat.mc_search_totals where tenant_id = $1", tenant));
        Assert.Equal((0, 0, 0), await SearchStatisticsAsync(tenant, new SearchFilter()));
    }

    [Fact]
    public async Task The_totals_are_filled_from_the_statistics_an_older_build_wrote_and_follow_every_later_change()
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var copy = await ScratchTables.CreateAsync(connection, "mc_search_stats");
        var schema = new SearchSchema(copy.Schema);
        Guid one = Guid.NewGuid(), two = Guid.NewGuid(), three = Guid.NewGuid(), four = Guid.NewGuid();
        // Statistics as a build without totals left them: two tenants, messages (kind 0) and a summary (kind 1).
        await connection.ExecuteAsync($"""
            insert into {schema.Stats} (tenant_id, conversation_id, kind, documents, lexemes) values
              ('a', '{one}', 0, 5, 50), ('a', '{two}', 0, 3, 30), ('a', '{one}', 1, 1, 20), ('b', '{three}', 0, 2, 8);
            """);

        await connection.ExecuteAsync(new SearchTotals(schema, 70).CreateSql());
        Assert.Equal([("a", 0, 8L, 80L), ("a", 1, 1L, 20L), ("b", 0, 2L, 8L)], await ReadTotalsAsync());

        // An indexing page: one statement adds to a conversation's row and inserts another's.
        await connection.ExecuteAsync($"""
            insert into {schema.Stats} as st (tenant_id, conversation_id, kind, documents, lexemes) values ('a', '{one}', 0, 2, 10), ('a', '{four}', 0, 1, 4)
            on conflict (tenant_id, conversation_id, kind) do update set documents = st.documents + excluded.documents, lexemes = st.lexemes + excluded.lexemes
            """);
        Assert.Equal([("a", 0, 11L, 94L), ("a", 1, 1L, 20L), ("b", 0, 2L, 8L)], await ReadTotalsAsync());

        // Retention takes a conversation's messages away.
        await connection.ExecuteAsync($"update {schema.Stats} set documents = documents - 3, lexemes = lexemes - 30 where tenant_id = 'a' and conversation_id = '{two}'");
        Assert.Equal([("a", 0, 8L, 64L), ("a", 1, 1L, 20L), ("b", 0, 2L, 8L)], await ReadTotalsAsync());

        // A deleted conversation: its summary was the tenant's only one.
        await connection.ExecuteAsync($"delete from {schema.Stats} where tenant_id = 'a' and conversation_id = '{one}'");
        Assert.Equal([("a", 0, 1L, 4L), ("b", 0, 2L, 8L)], await ReadTotalsAsync());

        // Made again (a later version of the definition), the totals are counted afresh, not added to.
        await connection.ExecuteAsync(new SearchTotals(schema, 70).CreateSql());
        Assert.Equal([("a", 0, 1L, 4L), ("b", 0, 2L, 8L)], await ReadTotalsAsync());

        // A rebuild's teardown, and a truncation by hand.
        await connection.ExecuteAsync($"delete from {schema.Stats}");
        Assert.Empty(await ReadTotalsAsync());
        await connection.ExecuteAsync($"insert into {schema.Stats} (tenant_id, conversation_id, kind, documents, lexemes) values ('b', '{three}', 0, 2, 8)");
        Assert.Equal([("b", 0, 2L, 8L)], await ReadTotalsAsync());
        await connection.ExecuteAsync($"truncate {schema.Stats}");
        Assert.Empty(await ReadTotalsAsync());

        async Task<List<(string, short, long, long)>> ReadTotalsAsync()
        {
            await using var command = new NpgsqlCommand($"select tenant_id, kind, documents, lexemes from {schema.Totals} order by tenant_id, kind", connection);
            var rows = new List<(string, short, long, long)>();
            await using var reader = await command.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                rows.Add((reader.GetString(0), reader.GetInt16(1), reader.GetInt64(2), reader.GetInt64(3)));
            }

            return rows;
        }
    }

    [Fact]
    public async Task A_started_node_finds_the_totals_and_their_triggers_as_its_schema_defines_them()
    {
        // Nothing left to create: a check that always answered "missing" would lock the statistics and count the totals
        // afresh at every start of every node.
        await app.Store.Storage.Database.AssertDatabaseMatchesConfigurationAsync();

        await using var connection = await app.OpenConnectionAsync();
        await connection.ExecuteAsync("drop trigger mc_search_totals_changed on modularchat.mc_search_stats");
        await Assert.ThrowsAnyAsync<Exception>(() => app.Store.Storage.Database.AssertDatabaseMatchesConfigurationAsync());
        await app.Store.Storage.ApplyAllConfiguredChangesToDatabaseAsync();
        await app.Store.Storage.Database.AssertDatabaseMatchesConfigurationAsync();
        Assert.Equal(1, await connection.ScalarAsync(
            "select count(*) from pg_trigger where tgrelid = 'modularchat.mc_search_stats'::regclass and tgname = 'mc_search_totals_changed'"));
    }

    [Fact]
    public async Task A_search_over_all_of_a_tenants_conversations_does_not_read_a_statistics_row_per_conversation()
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var copy = await ScratchTables.CreateAsync(connection, "mc_search_stats", "mc_search_totals");
        var schema = new SearchSchema(copy.Schema);
        // A tenant of 20,000 conversations among smaller ones.
        await connection.ExecuteAsync($"""
            insert into {schema.Stats} (tenant_id, conversation_id, kind, documents, lexemes)
              select case when g <= 20000 then 'big' else 'small-' || (g % 50) end, md5('c' || g)::uuid, 0, 10, 100 from generate_series(1, 25000) g;
            insert into {schema.Totals} (tenant_id, kind, documents, lexemes)
              select tenant_id, kind, sum(documents), sum(lexemes) from {schema.Stats} group by tenant_id, kind;
            analyze {schema.Stats};
            analyze {schema.Totals};
            """);

        foreach (var filter in new[] { new SearchFilter(), new SearchFilter(Scope: SearchScope.Messages) })
        {
            var command = KeywordSearch.TotalsCommand(schema, "big", filter);
            var plan = await connection.ExplainAsync(command.CommandText, command.Parameters);
            Assert.DoesNotContain(plan, l => l.Contains("mc_search_stats", StringComparison.Ordinal));
        }

        // Within some conversations, their rows alone, by the primary key.
        var within = KeywordSearch.TotalsCommand(schema, "big", new SearchFilter(ConversationIds: [Guid.NewGuid(), Guid.NewGuid()]));
        var scoped = await connection.ExplainAsync(within.CommandText, within.Parameters);
        Assert.Contains(scoped, l => l.Contains("Index Cond", StringComparison.Ordinal) && l.Contains("conversation_id = ANY", StringComparison.Ordinal));
        Assert.DoesNotContain(scoped, l => l.Contains("Seq Scan on mc_search_stats", StringComparison.Ordinal));
    }

    /// <summary>The tenant's message entries counted from the entries themselves: how many, and their lexemes.</summary>
    private Task<(long Documents, long Lexemes)> EntriesAsync(string tenant) => PairAsync(
        "select count(*), coalesce(sum(lexeme_count), 0)::bigint from modularchat.mc_search_entries where tenant_id = $1 and kind = 0", tenant);

    /// <summary>The tenant's message totals (0 when it has no row).</summary>
    private Task<(long Documents, long Lexemes)> TotalsAsync(string tenant) => PairAsync(
        "select coalesce(sum(documents), 0)::bigint, coalesce(sum(lexemes), 0)::bigint from modularchat.mc_search_totals where tenant_id = $1 and kind = 0", tenant);

    private async Task<(long, long)> PairAsync(string sql, string tenant)
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(sql, connection) { Parameters = { new NpgsqlParameter { Value = tenant } } };
        await using var reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        return (reader.GetInt64(0), reader.GetInt64(1));
    }

    /// <summary>What a keyword search reads of the tenant's statistics: its entries, their lexemes, and the entries in the filter's scope.</summary>
    private async Task<(long, long, long)> SearchStatisticsAsync(string tenant, SearchFilter filter)
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var batch = new NpgsqlBatch(connection) { BatchCommands = { KeywordSearch.TotalsCommand(new SearchSchema("modularchat"), tenant, filter) } };
        await using var reader = await batch.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        return (reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2));
    }
}
