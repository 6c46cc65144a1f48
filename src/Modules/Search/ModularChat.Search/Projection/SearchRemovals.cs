using Marten;
using ModularChat.Search.Storage;

namespace ModularChat.Search.Projection;

/// <summary>
/// The statements that take entries out of the search read model, queued on a Marten session so they commit with
/// whatever else it writes: a whole deleted conversation (with a tombstone, so late events cannot bring it back) or a
/// range of messages that retention deleted for good.
/// </summary>
internal sealed class SearchRemovals
{
    private readonly string _tombstoneSql;
    private readonly string[] _conversationSql;
    private readonly string[] _messageRangeSql;

    public SearchRemovals(SearchSchema s)
    {
        _tombstoneSql = $"insert into {s.Deletions} (tenant_id, conversation_id, deleted_at) values (^, ^, ^) on conflict (tenant_id, conversation_id) do nothing";

        // Separate statements, in this order, each with its own snapshot: the entries' row locks make a concurrent embedding
        // commit first (or find nothing), and the vector delete that follows then sees its vectors.
        // Placeholders: tenant, conversation.
        _conversationSql =
        [
            TermsDecrement(s, "e.tenant_id = ^ and e.conversation_id = ^"),
            ConversationPendingSql(s),
            $"delete from {s.Entries} where tenant_id = ^ and conversation_id = ^",
            $"delete from {s.Vectors} where tenant_id = ^ and conversation_id = ^",
            $"delete from {s.Stats} where tenant_id = ^ and conversation_id = ^",
        ];

        // The same for the message entries (kind 0) of one conversation between two sequences, keeping the BM25 statistics
        // true. Placeholders: tenant, conversation, from sequence, to sequence.
        static string Messages(string alias) =>
            $"{alias}tenant_id = ^ and {alias}conversation_id = ^ and {alias}kind = {(short)EntryKind.Message} and {alias}sequence between ^ and ^";
        _messageRangeSql =
        [
            TermsDecrement(s, Messages("e.")),
            $"""
            update {s.Stats} st set documents = st.documents - x.n, lexemes = st.lexemes - x.l
            from (select e.tenant_id, e.conversation_id, count(*) as n, coalesce(sum(e.lexeme_count), 0) as l from {s.Entries} e
                  where {Messages("e.")} group by e.tenant_id, e.conversation_id) x
            where st.tenant_id = x.tenant_id and st.conversation_id = x.conversation_id and st.kind = {(short)EntryKind.Message}
            """,
            $"delete from {s.Pending} p using {s.Entries} e where p.tenant_id = e.tenant_id and p.entry_id = e.id and {Messages("e.")}",
            $"delete from {s.Entries} where {Messages("")}",
            $"delete from {s.Vectors} where {Messages("")}",
            // What other nodes read to drop these vectors from memory (the projection and the cleanup handler both get here).
            $"insert into {s.RemovedRanges} (tenant_id, conversation_id, from_sequence, to_sequence) values (^, ^, ^, ^) on conflict do nothing",
        ];
    }

    /// <summary>
    /// The embedding queue's rows of a conversation's entries (placeholders: tenant, conversation), found through the
    /// entries (the index of a conversation's entries, then the queue's primary key), so it runs before they are deleted.
    /// Until 2026-12-07 by the queue's own conversation column, which no index covers: each deleted conversation read the
    /// tenant's whole part of the queue (by the primary key's tenant prefix), every entry of the tenant waiting for its
    /// vector (hundreds of thousands during an import, or while its embedding model is away), in the transaction that
    /// holds the tenant's term lock. A row queued for an entry already gone is left to the embedding
    /// worker, which takes it off the queue when it finds no entry.
    /// </summary>
    internal static string ConversationPendingSql(SearchSchema s)
        => $"delete from {s.Pending} p using {s.Entries} e where p.tenant_id = e.tenant_id and p.entry_id = e.id and e.tenant_id = ^ and e.conversation_id = ^";

    /// <summary>
    /// Takes the entries' lexemes (those of <paramref name="entries"/>, a condition on alias <c>e</c>) off the tenant's
    /// document frequencies, and removes the words no entry holds any more: the words of a deleted conversation (names,
    /// numbers) must not stay behind in the database, and the table would otherwise grow with every word ever indexed.
    /// The rows are locked in lexeme order first, the order in which the projection adds to them
    /// (<see cref="SearchEntriesProjection"/>): two removals of one tenant that share words (two conversations deleted at
    /// once) otherwise locked them in their join's order and could deadlock. The rows deleted and those updated are
    /// disjoint, so no row is changed twice in the statement.
    /// </summary>
    internal static string TermsDecrement(SearchSchema s, string entries) => $"""
        with x as (select e.tenant_id, u.lexeme, count(*) as n from {s.Entries} e cross join unnest(e.search_vector) u
                   where {entries} group by e.tenant_id, u.lexeme),
             locked as materialized (select t.tenant_id, t.lexeme, x.n from {s.Terms} t
                                     join x on t.tenant_id = x.tenant_id and t.lexeme = x.lexeme
                                     order by t.lexeme collate "C" for update of t),
             gone as (delete from {s.Terms} t using locked l
                      where t.tenant_id = l.tenant_id and t.lexeme = l.lexeme and t.documents <= l.n returning 1)
        update {s.Terms} t set documents = t.documents - l.n
        from locked l where t.tenant_id = l.tenant_id and t.lexeme = l.lexeme and t.documents > l.n
        """;

    /// <summary>
    /// Makes the session's transaction the only one writing the tenant's term counts until it ends; queued first by every
    /// writer of them (the projection's page, the cleanup handler). Each statement locks the terms it changes in lexeme
    /// order, but a projection page runs several such statements (inserts, a deletion's removal, more inserts), so a
    /// removal by the cleanup handler at that moment could still take words in between and deadlock with it.
    /// </summary>
    public static void LockTenantTerms(IDocumentOperations operations)
        => operations.QueueSqlCommand('^', "select pg_advisory_xact_lock(hashtextextended('modularchat.mc_search_terms:' || ^, 0))", operations.TenantId);

    /// <summary>Everything of a deleted conversation, and its tombstone.</summary>
    public void Conversation(IDocumentOperations operations, Guid conversationId, DateTimeOffset deletedAt)
    {
        operations.QueueSqlCommand('^', _tombstoneSql, operations.TenantId, conversationId, deletedAt.ToUniversalTime());
        foreach (var sql in _conversationSql)
        {
            operations.QueueSqlCommand('^', sql, operations.TenantId, conversationId);
        }
    }

    /// <summary>The message entries of a conversation from one sequence to another (both included).</summary>
    public void Messages(IDocumentOperations operations, Guid conversationId, long fromSequence, long toSequence)
    {
        foreach (var sql in _messageRangeSql)
        {
            operations.QueueSqlCommand('^', sql, operations.TenantId, conversationId, fromSequence, toSequence);
        }
    }
}
