using ModularChat.Search.Projection;
using ModularChat.Search.Storage;
using Npgsql;
using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>
/// The keyword statistics keep one row per tenant and word (<c>mc_search_terms</c>), which every removal of entries
/// decrements. Two removals of one tenant at once (two conversations deleted together, retention on two conversations)
/// that lock shared words in different orders deadlock, and PostgreSQL fails one of them (seen in the server's log under
/// the test load): each locks them in word order, the order in which the projection adds to them.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class TermLockOrderTests(SearchApp app)
{
    [Fact]
    public async Task A_removal_locks_the_tenants_words_in_order_so_two_removals_cannot_deadlock()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        // Made-up words the English stemmer keeps as they are, in an order unlike their sorted one.
        var words = Enumerable.Range(0, 60).Select(i => $"zq{(char)('a' + (i * 7) % 26)}{(char)('a' + i / 26)}x");
        var conversation = await client.StartConversation("locks", Message(string.Join(' ', words)));
        await client.WaitForIndexing(1);

        await using var observer = await app.OpenConnectionAsync();
        var lexemes = new List<string>();
        await using (var read = new NpgsqlCommand("select lexeme from modularchat.mc_search_terms where tenant_id = @tenant order by lexeme collate \"C\"", observer))
        {
            read.Parameters.AddWithValue("tenant", user);
            await using var reader = await read.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                lexemes.Add(reader.GetString(0));
            }
        }

        Assert.True(lexemes.Count >= 60, $"Only {lexemes.Count} words indexed");
        var middle = lexemes[lexemes.Count / 2];

        // Another transaction holds the middle word; the removal waits on it.
        await using var holder = await app.OpenConnectionAsync();
        await using var held = await holder.BeginTransactionAsync();
        await using (var hold = new NpgsqlCommand("select 1 from modularchat.mc_search_terms where tenant_id = @tenant and lexeme = @lexeme for update", holder))
        {
            hold.Parameters.AddWithValue("tenant", user);
            hold.Parameters.AddWithValue("lexeme", middle);
            await hold.ExecuteScalarAsync();
        }

        await using var remover = await app.OpenConnectionAsync();
        await using var removing = await remover.BeginTransactionAsync();
        await using var remove = new NpgsqlCommand(
            SearchRemovals.TermsDecrement(new SearchSchema("modularchat"), "e.tenant_id = @tenant and e.conversation_id = @conversation"), remover);
        remove.Parameters.AddWithValue("tenant", user);
        remove.Parameters.AddWithValue("conversation", conversation);
        var removal = remove.ExecuteNonQueryAsync();
        await Eventually.Until(async () =>
        {
            await using var waiting = new NpgsqlCommand("select count(*) from pg_stat_activity where pid = @pid and wait_event_type = 'Lock'", observer);
            waiting.Parameters.AddWithValue("pid", remover.ProcessID);
            return (long)(await waiting.ExecuteScalarAsync())!;
        }, n => n == 1, what: "The removal did not wait for the held word");

        // Meanwhile it holds exactly the words before the held one: a removal that needs a later word and holds an
        // earlier one can only be waiting for a transaction that holds neither.
        var free = new List<string>();
        await using (var probing = await observer.BeginTransactionAsync())
        {
            await using var probe = new NpgsqlCommand(
                "select lexeme from modularchat.mc_search_terms where tenant_id = @tenant for update skip locked", observer, probing);
            probe.Parameters.AddWithValue("tenant", user);
            await using (var reader = await probe.ExecuteReaderAsync())
            {
                while (await reader.ReadAsync())
                {
                    free.Add(reader.GetString(0));
                }
            }

            await probing.RollbackAsync();
        }

        Assert.Equal(lexemes.Where(l => string.CompareOrdinal(l, middle) > 0), free.Order(StringComparer.Ordinal));

        await held.RollbackAsync();
        await removal;
        // The conversation held every word of the tenant, so none is left (words no entry holds are removed).
        await using (var left = new NpgsqlCommand("select count(*) from modularchat.mc_search_terms where tenant_id = @tenant", remover, removing))
        {
            left.Parameters.AddWithValue("tenant", user);
            Assert.Equal(0L, (long)(await left.ExecuteScalarAsync())!);
        }

        await removing.RollbackAsync();
    }
}
