using Weasel.Core;
using Weasel.Postgresql;
using Weasel.Postgresql.Tables;

namespace ModularChat.Search.Storage;

/// <summary>Kinds of search entries (the <c>kind</c> column).</summary>
internal enum EntryKind : short
{
    Message = 0,
    Summary = 1,
}

/// <summary>
/// The Search module's PostgreSQL tables, created and migrated with the rest of the Marten schema.
/// They are plain tables rather than Marten documents because the read model needs a weighted tsvector with a GIN
/// index, BM25 statistics and vectors as bytes, written in bulk by the projection.
/// </summary>
internal sealed class SearchSchema(string schemaName)
{
    public string Schema { get; } = schemaName;

    /// <summary>One row per message and per summary revision: text, tsvector and what hits return.</summary>
    public string Entries => $"{Schema}.mc_search_entries";

    /// <summary>The embedding of each entry (float32, little-endian) with the model that made it; the source of truth of the in-memory index.</summary>
    public string Vectors => $"{Schema}.mc_search_vectors";

    /// <summary>Entries waiting for (re-)embedding by the background worker.</summary>
    public string Pending => $"{Schema}.mc_search_pending";

    /// <summary>Deleted conversations: late events for them are ignored, and every node drops their vectors from memory.</summary>
    public string Deletions => $"{Schema}.mc_search_deletions";

    /// <summary>Message ranges retention deleted: every node drops their vectors from memory (kept as long as the tombstones).</summary>
    public string RemovedRanges => $"{Schema}.mc_search_removed_ranges";

    /// <summary>Entry counts and lexeme totals per conversation and kind: BM25's collection statistics.</summary>
    public string Stats => $"{Schema}.mc_search_stats";

    /// <summary>
    /// Per tenant and kind, the sums of <see cref="Stats"/>, kept by triggers on it (<see cref="SearchTotals"/>): what a
    /// keyword search over all of a tenant's conversations reads instead of adding up one row per conversation.
    /// </summary>
    public string Totals => $"{Schema}.mc_search_totals";

    /// <summary>Per tenant and lexeme, how many entries contain it: BM25's document frequencies, and what keeps common words from flooding the candidates.</summary>
    public string Terms => $"{Schema}.mc_search_terms";

    /// <summary>The embedding model each tenant's vectors are built with.</summary>
    public string Models => $"{Schema}.mc_search_models";

    /// <summary>A single row whose generation changes when the index must be reloaded from scratch (after a rebuild).</summary>
    public string State => $"{Schema}.mc_search_state";

    /// <summary>A single row: the deployment's last rebuild of the read model through the API (its status and heartbeat).</summary>
    public string Rebuilds => $"{Schema}.mc_search_rebuilds";

    /// <summary>
    /// Tables that a projection rebuild empties before replaying the events, in this order (vectors and tombstones
    /// survive): the statistics' triggers take their rows off the totals, which are then empty anyway.
    /// </summary>
    public IEnumerable<string> RebuiltTables => [Entries, Pending, Stats, Terms, Totals];

    /// <summary>
    /// The tenant parameter <c>$<paramref name="parameter"/></c> as a value the planner cannot read:
    /// <c>(select $n::varchar)</c>. See <see cref="EntriesById"/>.
    /// </summary>
    public static string TenantParameter(int parameter) => $"(select ${parameter}::varchar)";

    /// <summary>
    /// A FROM item, alias <c>e</c>: the tenant's (<c>$<paramref name="tenantParameter"/></c>) entries whose ids are in the
    /// array <c>$<paramref name="idsParameter"/></c>, each found by one probe of the primary key (an id given twice gives
    /// its entry twice).
    /// </summary>
    /// <remarks>
    /// A tenant that is not in the tables' statistics yet (new since the last ANALYZE, typically one importing its
    /// history) is estimated at a row or two when the planner can read its id. A plain <c>tenant_id = $1 and id = any($2)</c>
    /// was then planned as a scan of the tenant's whole key range filtered by the ids, and the vectors were joined through
    /// an index of the tenant alone: every batch of the embedding worker read every entry and vector of the tenant (seen:
    /// 3 s per batch of 256 at 150,000 entries, so a bulk import slowed down as it grew). Here the ids drive a lateral
    /// subquery with a limit, which is planned for one id at a time, and the tenant is hidden behind a sub-select
    /// (<see cref="TenantParameter"/>), so it is estimated from the number of distinct tenants instead: the primary key
    /// is then the only sensible index (<c>SearchPlanTests</c>). Keyword searches hide it as well (<c>KeywordSearch.RankCommand</c>).
    /// </remarks>
    /// <param name="locking">A locking clause for the entries read (<c>for share</c>), or empty.</param>
    public string EntriesById(int tenantParameter, int idsParameter, string locking = "") =>
        $"unnest(${idsParameter}::uuid[]) as k(id) cross join lateral " +
        $"(select * from {Entries} x where x.tenant_id = {TenantParameter(tenantParameter)} and x.id = k.id limit 1 {locking}) e";

    /// <summary>Page fill of the counter tables (statistics and term document counts), whose rows are updated constantly.</summary>
    private const int HotCounterFillFactor = 70;

    public IEnumerable<ISchemaObject> Objects()
    {
        yield return new Extension("btree_gin");
        var entries = new Table(new PostgresqlObjectName(Schema, "mc_search_entries", SchemaUtils.IdentifierUsage.General));
        entries.AddColumn("tenant_id", "varchar").NotNull().AsPrimaryKey();
        entries.AddColumn("id", "uuid").NotNull().AsPrimaryKey();
        entries.AddColumn("conversation_id", "uuid").NotNull();
        entries.AddColumn("kind", "smallint").NotNull();
        entries.AddColumn("sequence", "bigint").NotNull();
        entries.AddColumn("from_sequence", "bigint");
        entries.AddColumn("revision", "integer");
        entries.AddColumn("role", "varchar");
        entries.AddColumn("speaker", "varchar");
        entries.AddColumn("external_id", "varchar");
        entries.AddColumn("metadata", "jsonb");
        entries.AddColumn("created_at", "timestamp with time zone").NotNull();
        // The offset from UTC, in minutes, that the time was written with: hits give it as the messages API does (a
        // timestamptz keeps the instant only). Null for entries indexed before it was kept: their time reads as UTC.
        entries.AddColumn("created_offset", "smallint");
        entries.AddColumn("content", "text").NotNull();
        entries.AddColumn("search_vector", "tsvector").NotNull();
        entries.AddColumn("lexeme_count", "integer").NotNull();
        // Over the tenant and the text (btree_gin), so that one scan finds exactly the tenant's matches of a query.
        entries.Indexes.Add(new IndexDefinition("ix_mc_search_entries_tenant_text") { Columns = ["tenant_id", "search_vector"], Method = IndexMethod.gin });
        entries.Indexes.Add(new IndexDefinition("ix_mc_search_entries_position") { Columns = ["tenant_id", "conversation_id", "sequence"] });
        // Over the tenant and the metadata (btree_gin, jsonb_path_ops), so that one scan finds exactly the tenant's entries
        // with the metadata asked for. Until 2026-12-07 over the metadata alone: a pair common in other tenants made every
        // filter on it read all their entries with it.
        var metadata = new IndexDefinition("ix_mc_search_entries_metadata") { Columns = ["tenant_id", "metadata"] };
        metadata.ToGinWithJsonbPathOps();
        entries.Indexes.Add(metadata);
        yield return entries;

        var vectors = new Table(new PostgresqlObjectName(Schema, "mc_search_vectors", SchemaUtils.IdentifierUsage.General));
        vectors.AddColumn("tenant_id", "varchar").NotNull().AsPrimaryKey();
        vectors.AddColumn("entry_id", "uuid").NotNull().AsPrimaryKey();
        vectors.AddColumn("conversation_id", "uuid").NotNull();
        vectors.AddColumn("kind", "smallint").NotNull();
        vectors.AddColumn("sequence", "bigint").NotNull();
        vectors.AddColumn("revision", "integer");
        vectors.AddColumn("role", "varchar");
        vectors.AddColumn("created_at", "timestamp with time zone").NotNull();
        vectors.AddColumn("model", "varchar").NotNull();
        vectors.AddColumn("dimensions", "integer").NotNull();
        vectors.AddColumn("vector", "bytea").NotNull();
        vectors.AddColumn("text_hash", "bigint").NotNull();
        vectors.AddColumn("terms", "integer[]").NotNull();
        // The writing transaction's id: readers catch up with "txid >= the oldest transaction still running when I last looked".
        vectors.AddColumn("txid", "xid8").NotNull().DefaultValueByExpression("pg_current_xact_id()");
        vectors.AddColumn("updated_at", "timestamp with time zone").NotNull().DefaultValueByExpression("now()");
        vectors.Indexes.Add(new IndexDefinition("ix_mc_search_vectors_txid") { Columns = ["tenant_id", "txid"] });
        vectors.Indexes.Add(new IndexDefinition("ix_mc_search_vectors_conversation") { Columns = ["tenant_id", "conversation_id"] });
        yield return vectors;

        var pending = new Table(new PostgresqlObjectName(Schema, "mc_search_pending", SchemaUtils.IdentifierUsage.General));
        pending.AddColumn("tenant_id", "varchar").NotNull().AsPrimaryKey();
        pending.AddColumn("entry_id", "uuid").NotNull().AsPrimaryKey();
        pending.AddColumn("conversation_id", "uuid").NotNull();
        pending.AddColumn("attempts", "integer").NotNull().DefaultValue(0);
        pending.AddColumn("not_before", "timestamp with time zone").NotNull().DefaultValueByExpression("now()");
        pending.Indexes.Add(new IndexDefinition("ix_mc_search_pending_due") { Columns = ["not_before"] });
        yield return pending;

        var deletions = new Table(new PostgresqlObjectName(Schema, "mc_search_deletions", SchemaUtils.IdentifierUsage.General));
        deletions.AddColumn("tenant_id", "varchar").NotNull().AsPrimaryKey();
        deletions.AddColumn("conversation_id", "uuid").NotNull().AsPrimaryKey();
        deletions.AddColumn("deleted_at", "timestamp with time zone").NotNull();
        deletions.AddColumn("txid", "xid8").NotNull().DefaultValueByExpression("pg_current_xact_id()");
        deletions.Indexes.Add(new IndexDefinition("ix_mc_search_deletions_txid") { Columns = ["tenant_id", "txid"] });
        yield return deletions;

        var ranges = new Table(new PostgresqlObjectName(Schema, "mc_search_removed_ranges", SchemaUtils.IdentifierUsage.General));
        ranges.AddColumn("tenant_id", "varchar").NotNull().AsPrimaryKey();
        ranges.AddColumn("conversation_id", "uuid").NotNull().AsPrimaryKey();
        ranges.AddColumn("from_sequence", "bigint").NotNull().AsPrimaryKey();
        ranges.AddColumn("to_sequence", "bigint").NotNull();
        ranges.AddColumn("removed_at", "timestamp with time zone").NotNull().DefaultValueByExpression("now()");
        ranges.AddColumn("txid", "xid8").NotNull().DefaultValueByExpression("pg_current_xact_id()");
        ranges.Indexes.Add(new IndexDefinition("ix_mc_search_removed_ranges_txid") { Columns = ["tenant_id", "txid"] });
        yield return ranges;

        var stats = new Table(new PostgresqlObjectName(Schema, "mc_search_stats", SchemaUtils.IdentifierUsage.General));
        stats.AddColumn("tenant_id", "varchar").NotNull().AsPrimaryKey();
        stats.AddColumn("conversation_id", "uuid").NotNull().AsPrimaryKey();
        stats.AddColumn("kind", "smallint").NotNull().AsPrimaryKey();
        stats.AddColumn("documents", "bigint").NotNull();
        stats.AddColumn("lexemes", "bigint").NotNull();
        // Counters updated by every indexing batch: room on each page lets PostgreSQL update them in place (HOT),
        // without a new index entry per update and the bloat a full page leaves behind.
        stats.WithFillFactor(HotCounterFillFactor);
        yield return stats;
        yield return new SearchTotals(this, HotCounterFillFactor);

        var terms = new Table(new PostgresqlObjectName(Schema, "mc_search_terms", SchemaUtils.IdentifierUsage.General));
        terms.AddColumn("tenant_id", "varchar").NotNull().AsPrimaryKey();
        terms.AddColumn("lexeme", "text").NotNull().AsPrimaryKey();
        terms.AddColumn("documents", "bigint").NotNull();
        terms.WithFillFactor(HotCounterFillFactor);
        yield return terms;

        var models = new Table(new PostgresqlObjectName(Schema, "mc_search_models", SchemaUtils.IdentifierUsage.General));
        models.AddColumn("tenant_id", "varchar").NotNull().AsPrimaryKey();
        models.AddColumn("model", "varchar").NotNull();
        models.AddColumn("checked_at", "timestamp with time zone").NotNull();
        yield return models;

        var state = new Table(new PostgresqlObjectName(Schema, "mc_search_state", SchemaUtils.IdentifierUsage.General));
        state.AddColumn("id", "integer").NotNull().AsPrimaryKey();
        state.AddColumn("generation", "bigint").NotNull();
        yield return state;

        var rebuilds = new Table(new PostgresqlObjectName(Schema, "mc_search_rebuilds", SchemaUtils.IdentifierUsage.General));
        rebuilds.AddColumn("id", "integer").NotNull().AsPrimaryKey();
        rebuilds.AddColumn("run_id", "uuid").NotNull();
        rebuilds.AddColumn("state", "varchar").NotNull();
        rebuilds.AddColumn("started_at", "timestamp with time zone").NotNull();
        rebuilds.AddColumn("finished_at", "timestamp with time zone");
        rebuilds.AddColumn("error", "text");
        rebuilds.AddColumn("orphan_vectors_removed", "bigint");
        rebuilds.AddColumn("node", "uuid").NotNull();
        rebuilds.AddColumn("heartbeat_at", "timestamp with time zone").NotNull();
        yield return rebuilds;
    }
}
