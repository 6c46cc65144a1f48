using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Contracts;
using ModularChat.Search.Projection;
using Npgsql;
using static ModularChat.Search.Tests.SearchApp;

namespace ModularChat.Search.Tests;

/// <summary>
/// A tenant's word counts (<c>mc_search_terms</c>, for BM25) are written by the projection's pages and by the cleanup
/// handler's removals. Each statement locks its words in lexeme order, but one page runs several statements, so a removal
/// running beside a page could take words in between and the two deadlocked (seen under a load of appends and deletions;
/// Marten tries the victim's batch again, but logs the deadlock as errors). The interleaving is fixed here by holding one word's row from another session.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class TermCountLockTests(SearchApp app)
{
    /// <summary>Sessions of this database waiting for a lock (the statements' text is cut at 1 kB there, so not by text).</summary>
    private const string WaitingOnTermsSql =
        "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database() and pid <> pg_backend_pid()";

    [Fact]
    public async Task A_page_of_the_projection_and_a_removal_of_one_tenant_that_share_words_wait_for_each_other_instead_of_deadlocking()
    {
        var tenant = ModularChatApp.NewUser("terms");
        var projection = app.Projection(() => throw new NotSupportedException("no archive is read"));
        Guid deleted = Guid.NewGuid(), other = Guid.NewGuid(), third = Guid.NewGuid();
        await app.ApplyPageAsync(tenant, projection, [Appended(deleted, "alpha bravo"), Appended(third, "mike")]);

        // Another session holds the word "mike": the page below stops there, holding "bravo" (its insert takes both, in order).
        await using var holder = await app.OpenConnectionAsync();
        await using var holding = await holder.BeginTransactionAsync();
        await holder.ScalarAsync("select documents::bigint from modularchat.mc_search_terms where tenant_id = $1 and lexeme = 'mike' for update", tenant);
        await using var observer = await app.OpenConnectionAsync();

        // The page: a message with "bravo mike", then the deletion of the conversation with "alpha bravo".
        var mark = $"term-lock-{Guid.NewGuid():N}";
        using var marked = CapturedLogs.Mark(mark);
        var page = app.ApplyPageAsync(tenant, projection, [Appended(other, "bravo mike"), Deleted(deleted)]);
        await Eventually.Until(() => observer.ScalarAsync(WaitingOnTermsSql), n => n == 1, 60, "the page did not reach the held word");
        // Meanwhile the cleanup handler removes the same conversation (it took "alpha" first, before waiting on "bravo").
        var cleanup = Task.Run(async () =>
        {
            await using var session = app.Store.LightweightSession(tenant);
            SearchCleanupHandler.Handle(new ConversationDeleted(deleted, DateTimeOffset.UtcNow), session);
            await session.SaveChangesAsync();
        });
        await Eventually.Until(() => observer.ScalarAsync(WaitingOnTermsSql), n => n == 2, 60, "the removal did not wait");

        // Let go: the page goes on to remove the conversation itself, which needs "alpha".
        await holding.RollbackAsync();
        await page;
        await cleanup;

        // Neither was a deadlock's victim (Marten tries a victim's batch again, so it would still have been written).
        Assert.DoesNotContain(app.Logs.Entries, e => e.Mark == mark && e.Exception is not null && Sql.IsDeadlock(e.Exception));
        Assert.Equal([("bravo", 1L), ("mike", 2L)], (await TermsAsync(tenant)).Where(t => t.Lexeme is "alpha" or "bravo" or "mike")); // "alpha" is nobody's now
        Assert.Equal(0, await observer.ScalarAsync("select count(*) from modularchat.mc_search_entries where tenant_id = $1 and conversation_id = $2", tenant, deleted));
    }

    [Fact]
    public async Task The_words_only_a_deleted_conversation_held_leave_the_word_counts()
    {
        var tenant = ModularChatApp.NewUser("words");
        var projection = app.Projection(() => throw new NotSupportedException("no archive is read"));
        Guid gone = Guid.NewGuid(), kept = Guid.NewGuid();
        await app.ApplyPageAsync(tenant, projection, [Appended(gone, "zanzibar harbour"), Appended(kept, "harbour")]);
        async Task<IEnumerable<(string, long)>> Words() => (await TermsAsync(tenant)).Where(t => t.Lexeme is "harbour" or "zanzibar");
        Assert.Equal([("harbour", 2L), ("zanzibar", 1L)], await Words());

        await app.ApplyPageAsync(tenant, projection, [Deleted(gone)]);

        // A name or a number said only there does not stay behind in the database (it used to, with a count of 0).
        Assert.Equal([("harbour", 1L)], await Words());
    }

    /// <summary>The tenant's words and how many entries hold each.</summary>
    private async Task<List<(string Lexeme, long Documents)>> TermsAsync(string tenant)
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(
            "select lexeme, documents from modularchat.mc_search_terms where tenant_id = $1 order by lexeme collate \"C\"", connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenant });
        var terms = new List<(string, long)>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            terms.Add((reader.GetString(0), Convert.ToInt64(reader.GetValue(1), System.Globalization.CultureInfo.InvariantCulture)));
        }

        return terms;
    }
}
