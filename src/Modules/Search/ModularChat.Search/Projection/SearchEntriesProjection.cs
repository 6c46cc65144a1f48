using System.Security.Cryptography;
using System.Text.Json;
using JasperFx.Events;
using JasperFx.Events.Projections;
using Marten;
using Marten.Events.Projections;
using ModularChat.BuildingBlocks.Background;
using ModularChat.Conversations.Contracts;
using ModularChat.Search.Storage;
using ModularChat.Summaries.Contracts;

namespace ModularChat.Search.Projection;

/// <summary>
/// The search read model, built asynchronously from the conversation and summary event streams: one entry per
/// message and one per summary revision, with a weighted tsvector (content, then speaker), BM25 statistics and a
/// queue row for the embedding worker. A deleted conversation loses its entries, vectors and statistics and leaves a
/// tombstone, so a late event (a summary finishing after the delete) cannot bring it back; past the tombstone's lifetime,
/// a summary revision of a conversation that no longer exists is not indexed either.
/// </summary>
/// <remarks>
/// Each tenant's slice of an event page becomes a few set-based statements (unnest of arrays), not one statement
/// per event. A rebuild empties entries, queue and statistics and replays every event; vectors are kept and reused
/// when the text they were made from has not changed, so a rebuild does not pay for embeddings again.
/// </remarks>
internal sealed class SearchEntriesProjection : ProjectionBase, IProjection
{
    public const string ProjectionName = "SearchEntries";

    private readonly SearchSchema _schema;
    private readonly string _language;
    private readonly string[] _speakerKeys;
    private readonly string _insertSql;
    private readonly string _unindexedSql;
    private readonly SearchRemovals _removals;
    private readonly Func<IConversationMessages> _messages;
    private readonly AppendBursts _bursts;

    /// <param name="messages">Reads archived messages (resolved when first needed: the store is being built when this is).</param>
    /// <param name="bursts">Indexing waits while this node ingests a burst of appends (up to its lag limit), and catches up after.</param>
    public SearchEntriesProjection(SearchSchema schema, string language, IReadOnlyList<string> speakerKeys, Func<IConversationMessages> messages,
        AppendBursts bursts)
    {
        _messages = messages;
        _bursts = bursts;
        _schema = schema;
        _language = language;
        _speakerKeys = [.. speakerKeys];
        Name = ProjectionName;
        IncludeType<MessageAppended>();
        IncludeType<SummaryRevised>();
        IncludeType<ConversationDeleted>();
        IncludeType<RetentionApplied>();
        foreach (var table in schema.RebuiltTables)
        {
            Options.DeleteDataInTableOnTeardown(table);
        }

        _insertSql = InsertSql(schema);
        _unindexedSql = $"""
            select s from generate_series(^::bigint, ^::bigint) s
            where not exists (select 1 from {schema.Entries} e
                              where e.tenant_id = ^ and e.conversation_id = ^ and e.kind = {(short)EntryKind.Message} and e.sequence = s)
            order by s
            """;
        _removals = new SearchRemovals(schema);
    }

    /// <summary>Archived messages read back per round trip when a rebuild indexes them.</summary>
    private const int ArchiveChunk = 500;

    public async Task ApplyAsync(IDocumentOperations operations, IReadOnlyList<IEvent> events, CancellationToken cancellation)
    {
        if (events.Count > 0)
        {
            // Before any statement of this page: nothing is held while it waits. A rebuild's old events never wait.
            await _bursts.YieldAsync(events[0].Timestamp, "search.indexing", cancellation);
            SearchRemovals.LockTenantTerms(operations);
        }

        // Events of one tenant, in order. Inserts are gathered until a deletion, so order is kept where it matters.
        var batch = new EntryBatch();
        var existing = new Dictionary<Guid, bool>();
        foreach (var e in events)
        {
            switch (e.Data)
            {
                case MessageAppended m:
                    AddMessage(batch, m.MessageId, m.ConversationId, m.Sequence, m.Role, m.ExternalId, m.Metadata, m.CreatedAt, m.Content);
                    break;
                case SummaryRevised s when await ExistsAsync(operations, existing, s.ConversationId, cancellation):
                    batch.Add(SummaryEntryId(s.ConversationId, s.Revision), s.ConversationId, EntryKind.Summary, s.ToSequence, s.FromSequence,
                        s.Revision, null, null, null, null, s.RevisedAt, s.Text);
                    break;
                case ConversationDeleted d:
                    Flush(operations, batch);
                    _removals.Conversation(operations, d.ConversationId, d.DeletedAt);
                    break;
                case RetentionApplied r:
                    Flush(operations, batch);
                    if (r.Action == RetentionAction.Deleted)
                    {
                        // A rebuild replays the messages before the retention that deleted them: they go again.
                        _removals.Messages(operations, r.ConversationId, r.FromSequence, r.ToSequence);
                    }

                    await IndexArchiveAsync(operations, batch, r, cancellation);
                    break;
            }
        }

        Flush(operations, batch);
    }

    /// <summary>
    /// Whether the conversation of a summary revision still exists (once per page and conversation). A summary job that read
    /// the conversation before its deletion can store its revision after it, in the summary stream, later than the deletion
    /// in the event order: the tombstone keeps it out only for <c>Search:TombstoneLifetime</c>, and indexing can read it
    /// later than that (it steps aside for append bursts, ADR 0008, and nothing bounds its lag), when no event would take
    /// the entry out again. A revision stored before the deletion is indexed, then removed with the deletion's event.
    /// </summary>
    private async Task<bool> ExistsAsync(IDocumentOperations operations, Dictionary<Guid, bool> existing, Guid conversationId, CancellationToken cancellation)
    {
        if (!existing.TryGetValue(conversationId, out var exists))
        {
            exists = existing[conversationId] = await _messages().FindAsync(operations.TenantId, conversationId, cancellation) is not null;
        }

        return exists;
    }

    /// <summary>
    /// Archived messages left the event stream but stay readable, so they stay searchable. Live they were indexed when
    /// appended: nothing is read. A rebuild, which no longer replays their events, indexes them from the archive: only the
    /// runs that have no entry are read back.
    /// </summary>
    /// <remarks>
    /// The archived ranges are the conversation's (read now), up to this step's end, not only the step's own: a later
    /// step's compaction folds this event into the stream's snapshot when messages were appended after it, and a rebuild
    /// then never sees it. The latest step's event is never folded (a compaction always appends one), so on rebuild it
    /// brings back every archived range before it.
    /// </remarks>
    private async Task IndexArchiveAsync(IDocumentOperations operations, EntryBatch batch, RetentionApplied step, CancellationToken cancellation)
    {
        var conversation = await _messages().FindAsync(operations.TenantId, step.ConversationId, cancellation);
        var archived = conversation?.Retained
            .Where(r => r.Action == RetentionAction.Archived && r.FromSequence <= step.ToSequence)
            .Select(r => (r.FromSequence, Math.Min(r.ToSequence, step.ToSequence))) ?? []; // deleted since: its deletion event follows
        foreach (var (rangeFrom, rangeTo) in archived)
        {
            foreach (var (from, to) in await UnindexedAsync(operations, step.ConversationId, rangeFrom, rangeTo, cancellation))
            {
                await foreach (var chunk in _messages().ReadArchivedChunksAsync(
                    operations.TenantId, step.ConversationId, from - 1, to, ArchiveChunk, cancellation))
                {
                    foreach (var m in chunk)
                    {
                        AddMessage(batch, m.MessageId, m.ConversationId, m.Sequence, m.Role, m.ExternalId, m.Metadata, m.CreatedAt, m.Content);
                    }

                    Flush(operations, batch);
                }
            }
        }
    }

    /// <summary>
    /// The runs of sequences between <paramref name="from"/> and <paramref name="to"/> that have no message entry, oldest
    /// first: one probe of the (tenant, conversation, sequence) index per sequence, and no row back when all have one (live).
    /// </summary>
    private async Task<List<(long From, long To)>> UnindexedAsync(IDocumentOperations operations, Guid conversationId, long from, long to,
        CancellationToken cancellation)
    {
        var missing = await operations.AdvancedSql.QueryAsync<long>('^', _unindexedSql, cancellation, from, to, operations.TenantId, conversationId);
        var runs = new List<(long From, long To)>();
        foreach (var sequence in missing)
        {
            if (runs.Count > 0 && runs[^1].To + 1 == sequence)
            {
                runs[^1] = (runs[^1].From, sequence);
            }
            else
            {
                runs.Add((sequence, sequence));
            }
        }

        return runs;
    }

    /// <summary>The id of a summary revision's entry: stable, so a rebuild gives it the same id (and finds its vector again).</summary>
    public static Guid SummaryEntryId(Guid conversationId, int revision)
    {
        Span<byte> input = stackalloc byte[20];
        conversationId.TryWriteBytes(input);
        BitConverter.TryWriteBytes(input[16..], revision);
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(input, hash);
        hash[6] = (byte)((hash[6] & 0x0F) | 0x80); // version 8 (custom), RFC 9562
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash[..16], bigEndian: true);
    }

    private void AddMessage(EntryBatch batch, Guid id, Guid conversationId, long sequence, MessageRole role, string? externalId,
        IReadOnlyDictionary<string, string>? metadata, DateTimeOffset createdAt, string content)
        => batch.Add(id, conversationId, EntryKind.Message, sequence, null, null, Roles.ToWire(role), Speaker(metadata), externalId,
            metadata is { Count: > 0 } ? JsonSerializer.Serialize(EntryBatch.WithoutNul(metadata)) : null,
            createdAt, content);

    /// <summary>The speaker of a message: the first metadata value among the configured keys (e.g. "speaker").</summary>
    private string? Speaker(IReadOnlyDictionary<string, string>? metadata)
    {
        if (metadata is null)
        {
            return null;
        }

        foreach (var key in _speakerKeys)
        {
            foreach (var (k, v) in metadata)
            {
                if (string.Equals(k, key, StringComparison.OrdinalIgnoreCase) && !string.IsNullOrWhiteSpace(v))
                {
                    return v.Trim();
                }
            }
        }

        return null;
    }

    private void Flush(IDocumentOperations operations, EntryBatch batch)
    {
        if (batch.Count == 0)
        {
            return;
        }

        operations.QueueSqlCommand('^', _insertSql,
            operations.TenantId, _language,
            batch.Ids.ToArray(), batch.Conversations.ToArray(), batch.Kinds.ToArray(), batch.Sequences.ToArray(),
            batch.FromSequences.ToArray(), batch.Revisions.ToArray(), batch.RoleValues.ToArray(), batch.Speakers.ToArray(),
            batch.ExternalIds.ToArray(), batch.Metadata.ToArray(), batch.CreatedAt.ToArray(), batch.CreatedOffsets.ToArray(), batch.Contents.ToArray());
        batch.Clear();
    }

    /// <summary>Longest word (in UTF-8 bytes) whose documents are counted in the term counts' (tenant, lexeme) index.</summary>
    internal const int MaxCountedLexemeBytes = 1500;

    private static string InsertSql(SearchSchema s) => $"""
        with params as (select ^::varchar as tenant_id, ^::regconfig as config),
        input as (
            select * from unnest(^::uuid[], ^::uuid[], ^::smallint[], ^::bigint[], ^::bigint[], ^::integer[], ^::varchar[], ^::varchar[],
                                 ^::varchar[], ^::text[], ^::timestamptz[], ^::smallint[], ^::text[])
                as x(id, conversation_id, kind, sequence, from_sequence, revision, role, speaker, external_id, metadata, created_at,
                     created_offset, content)
        ),
        doc as (
            -- Angle brackets are hidden from the parser, which would otherwise drop "<...>" as an XML tag (see HitDetails).
            -- The month and year a message was written are searchable too ("what did we plan in May 2023").
            select x.*, setweight(to_tsvector(p.config, translate(x.content, '<>', E'\u27E8\u27E9')), 'A')
                        || setweight(to_tsvector(p.config, coalesce(x.speaker, '')), 'B')
                        -- coalesce: to_char has no month for -infinity/infinity (a date stored before the API refused them).
                        || setweight(to_tsvector(p.config, coalesce(to_char(x.created_at at time zone 'UTC', 'FMMonth YYYY'), '')), 'D') as search_vector
            from input x cross join params p
            where not exists (select 1 from {s.Deletions} d where d.tenant_id = p.tenant_id and d.conversation_id = x.conversation_id)
        ),
        inserted as (
            insert into {s.Entries} as e (tenant_id, id, conversation_id, kind, sequence, from_sequence, revision, role, speaker, external_id,
                                          metadata, created_at, created_offset, content, search_vector, lexeme_count)
            select p.tenant_id, d.id, d.conversation_id, d.kind, d.sequence, d.from_sequence, d.revision, d.role, d.speaker, d.external_id,
                   d.metadata::jsonb, d.created_at, d.created_offset, d.content, d.search_vector, length(d.search_vector)
            from doc d cross join params p
            on conflict (tenant_id, id) do nothing
            returning e.id, e.conversation_id, e.kind, e.lexeme_count, e.search_vector
        ),
        lexemes as (
            insert into {s.Terms} as t (tenant_id, lexeme, documents)
            select p.tenant_id, u.lexeme, count(*)
            from inserted i cross join unnest(i.search_vector) u cross join params p
            -- A PostgreSQL index row holds ~2.7 kB: a tenant id of 256 non-ASCII characters (up to 768 bytes) and a word of random letters
            -- (to_tsvector keeps words up to 2 kB) would not fit, and the failing statement would stall indexing for every
            -- tenant. Such words are still indexed and found, only left out of the counts (taken as rare).
            where octet_length(u.lexeme) <= {MaxCountedLexemeBytes}
            group by p.tenant_id, u.lexeme
            order by u.lexeme collate "C" -- the order in which removals lock them (SearchRemovals.TermsDecrement)
            on conflict (tenant_id, lexeme) do update set documents = t.documents + excluded.documents
        ),
        counted as (
            insert into {s.Stats} as st (tenant_id, conversation_id, kind, documents, lexemes)
            select p.tenant_id, i.conversation_id, i.kind, count(*), sum(i.lexeme_count)
            from inserted i cross join params p group by p.tenant_id, i.conversation_id, i.kind
            on conflict (tenant_id, conversation_id, kind)
            do update set documents = st.documents + excluded.documents, lexemes = st.lexemes + excluded.lexemes
        ),
        queued as (
            insert into {s.Pending} (tenant_id, entry_id, conversation_id)
            select p.tenant_id, i.id, i.conversation_id from inserted i cross join params p
            on conflict (tenant_id, entry_id) do update set attempts = 0, not_before = now()
        )
        select count(*) from inserted
        """;

    /// <summary>Column arrays of the entries of one flush.</summary>
    private sealed class EntryBatch
    {
        public List<Guid> Ids { get; } = [];
        public List<Guid> Conversations { get; } = [];
        public List<short> Kinds { get; } = [];
        public List<long> Sequences { get; } = [];
        public List<long?> FromSequences { get; } = [];
        public List<int?> Revisions { get; } = [];
        public List<string?> RoleValues { get; } = [];
        public List<string?> Speakers { get; } = [];
        public List<string?> ExternalIds { get; } = [];
        public List<string?> Metadata { get; } = [];
        public List<DateTimeOffset> CreatedAt { get; } = [];
        public List<short> CreatedOffsets { get; } = [];
        public List<string> Contents { get; } = [];

        public int Count => Ids.Count;

        public void Add(Guid id, Guid conversationId, EntryKind kind, long sequence, long? fromSequence, int? revision, string? role,
            string? speaker, string? externalId, string? metadata, DateTimeOffset createdAt, string content)
        {
            Ids.Add(id);
            Conversations.Add(conversationId);
            Kinds.Add((short)kind);
            Sequences.Add(sequence);
            FromSequences.Add(fromSequence);
            Revisions.Add(revision);
            RoleValues.Add(role);
            Speakers.Add(WithoutNul(speaker));
            ExternalIds.Add(WithoutNul(externalId));
            Metadata.Add(metadata);
            CreatedAt.Add(createdAt.ToUniversalTime());
            CreatedOffsets.Add((short)createdAt.Offset.TotalMinutes);
            Contents.Add(WithoutNul(content));
        }

        // PostgreSQL text cannot hold NUL characters: a poison value must not stall the projection for every tenant.
        [return: System.Diagnostics.CodeAnalysis.NotNullIfNotNull(nameof(value))]
        private static string? WithoutNul(string? value)
            => value is not null && value.Contains('\0', StringComparison.Ordinal) ? value.Replace("\0", "", StringComparison.Ordinal) : value;

        /// <summary>
        /// Metadata without NUL characters in its keys and values, cleaned before it is serialized: taking the escape
        /// <c>\u0000</c> out of the JSON text instead cut a value holding a backslash and <c>u0000</c> as written (JSON
        /// <c>"\\u0000"</c>) into invalid JSON, and the failing statement stalled the projection for every tenant.
        /// </summary>
        public static IReadOnlyDictionary<string, string> WithoutNul(IReadOnlyDictionary<string, string> metadata)
            => metadata.Any(p => p.Key.Contains('\0', StringComparison.Ordinal) || p.Value.Contains('\0', StringComparison.Ordinal))
                ? metadata.GroupBy(p => WithoutNul(p.Key), StringComparer.Ordinal).ToDictionary(g => g.Key, g => WithoutNul(g.First().Value), StringComparer.Ordinal)
                : metadata;

        public void Clear()
        {
            Ids.Clear();
            Conversations.Clear();
            Kinds.Clear();
            Sequences.Clear();
            FromSequences.Clear();
            Revisions.Clear();
            RoleValues.Clear();
            Speakers.Clear();
            ExternalIds.Clear();
            Metadata.Clear();
            CreatedAt.Clear();
            CreatedOffsets.Clear();
            Contents.Clear();
        }
    }
}

/// <summary>Message roles as stored and filtered in search ("user", "assistant", "system", "tool").</summary>
internal static class Roles
{
    public static string ToWire(MessageRole role) => role switch
    {
        MessageRole.User => "user",
        MessageRole.Assistant => "assistant",
        MessageRole.System => "system",
        MessageRole.Tool => "tool",
        _ => role.ToString().ToLowerInvariant(),
    };

    public static bool IsKnown(string role) => Normalized(role) is "user" or "assistant" or "system" or "tool";

    /// <summary>A role as a query names it, in the wire form (any case is taken, as appends take it).</summary>
    public static string Normalized(string role) => role.Trim().ToLowerInvariant();
}
