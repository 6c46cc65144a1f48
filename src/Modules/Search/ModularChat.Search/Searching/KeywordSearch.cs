using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Options;
using ModularChat.Search.Storage;
using Npgsql;
using NpgsqlTypes;

namespace ModularChat.Search.Searching;

/// <summary>A keyword hit: the entry and its BM25 score after neighbouring-turn context.</summary>
internal sealed record KeywordCandidate(Guid EntryId, double Score, DateTimeOffset CreatedAt);

/// <summary>
/// Keyword search on PostgreSQL's full-text search. The query's lexemes (stemmed, stop words dropped, by the
/// configured text-search configuration) are looked up in the tenant's term statistics; entries are found through
/// the GIN index on their tsvector and ranked with BM25 (term frequency taken as 1, as chat turns rarely repeat a
/// word): each matching lexeme adds its inverse document frequency, and shorter entries weigh more. A message then
/// inherits a share of its previous and next turn's scores.
/// </summary>
/// <remarks>
/// Common words would make every query read a large share of the tenant's entries ("good", a speaker's name in
/// half of them). So entries are fetched through the query's rarest lexemes only, adding lexemes from the rarest up
/// while the expected number of entries stays within <see cref="SearchOptions.MaxKeywordCandidates"/> (the rarest
/// is always used); every lexeme still scores the entries fetched. An entry that contains only very common words of
/// the query is not found, which costs little: such an entry would rank below those with a rarer word. When even the
/// rarest lexeme is over the budget, entries holding both of the two rarest are fetched first, and the rarest alone
/// only when those are too few. Matches can still outnumber the budget (a query of everyday words only): all are
/// scored, and the best <see cref="SearchOptions.MaxKeywordCandidates"/> of them go on to the neighbouring-turn shares
/// and the ranking, the part whose cost grows fastest with the matches. Filters on the hits (role, time, metadata) choose
/// which matches go first: those that fit them, then the others for their shares to neighbouring turns.
/// </remarks>
internal sealed class KeywordSearch(SearchDatabase database, IOptions<SearchOptions> options)
{
    /// <summary>Most lexemes of a query that count (the rarest ones).</summary>
    private const int MaxLexemes = 32;

    public async Task<IReadOnlyList<KeywordCandidate>> SearchAsync(string tenantId, string query, SearchFilter filter, int limit, CancellationToken cancellationToken)
    {
        var o = options.Value;
        await using var connection = await database.OpenAsync(cancellationToken);
        var statistics = await StatisticsAsync(connection, tenantId, query, filter, cancellationToken);
        var lexemes = statistics.Lexemes.Where(l => l.Documents > 0).OrderBy(l => l.Documents).ThenBy(l => l.Lexeme, StringComparer.Ordinal).Take(MaxLexemes).ToList();
        if (lexemes.Count == 0)
        {
            return [];
        }

        // Fetch through the rarest lexemes while the expected candidates (scaled to the searched scope) fit the budget.
        var scale = statistics.Documents == 0 ? 1 : (double)statistics.ScopeDocuments / statistics.Documents;
        var retrieval = 1;
        var expected = lexemes[0].Documents * scale;
        while (retrieval < lexemes.Count && expected + lexemes[retrieval].Documents * scale <= o.MaxKeywordCandidates)
        {
            expected += lexemes[retrieval++].Documents * scale;
        }

        NpgsqlTsQuery any = new NpgsqlTsQueryLexeme(lexemes[0].Lexeme);
        foreach (var lexeme in lexemes.Skip(1).Take(retrieval - 1))
        {
            any = new NpgsqlTsQueryOr(any, new NpgsqlTsQueryLexeme(lexeme.Lexeme));
        }

        // When even the rarest word is too common, entries holding both of the two rarest come first (they outscore
        // entries with only one); the rarest alone is the fallback when they are too few.
        if (expected > o.MaxKeywordCandidates && lexemes.Count >= 2)
        {
            var both = await RankAsync(connection, tenantId, filter, limit, lexemes, statistics,
                new NpgsqlTsQueryAnd(new NpgsqlTsQueryLexeme(lexemes[0].Lexeme), new NpgsqlTsQueryLexeme(lexemes[1].Lexeme)), cancellationToken);
            if (both.Count >= limit)
            {
                return both;
            }
        }

        return await RankAsync(connection, tenantId, filter, limit, lexemes, statistics, any, cancellationToken);
    }

    private async Task<IReadOnlyList<KeywordCandidate>> RankAsync(NpgsqlConnection connection, string tenantId, SearchFilter filter, int limit,
        List<(string Lexeme, long Documents)> lexemes, TermStatistics statistics, NpgsqlTsQuery retrieval, CancellationToken cancellationToken)
    {
        await using var command = RankCommand(database.Schema, options.Value, tenantId, filter, limit, lexemes, statistics, retrieval);
        command.Connection = connection;
        var result = new List<KeywordCandidate>(limit);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            result.Add(new KeywordCandidate(reader.GetGuid(0), reader.GetDouble(2), reader.GetFieldValue<DateTimeOffset>(1)));
        }

        return result;
    }

    /// <summary>
    /// The statement that fetches entries through <paramref name="retrieval"/>, scores them with every lexeme of the
    /// query and ranks them, neighbouring turns included (id, created_at, score; best first).
    /// </summary>
    /// <remarks>
    /// The tenant is hidden from the planner (<see cref="SearchSchema.TenantParameter"/>). A tenant new since the last
    /// ANALYZE, in a database whose tenants all fit the statistics, is estimated at a row or two when its id is
    /// visible: the best turns were then joined back to their entries by a nested loop over all of the tenant's
    /// entries for each of them, and the matches fetched by reading every entry of the tenant (0.4-0.8 s at 50,000
    /// entries of a newcomer among five tenants, where ~10 ms is right; <c>SearchPlanTests</c>). Hidden, it is
    /// estimated at an average tenant's size.
    /// </remarks>
    internal static NpgsqlCommand RankCommand(SearchSchema schema, SearchOptions o, string tenantId, SearchFilter filter, int limit,
        IReadOnlyList<(string Lexeme, long Documents)> lexemes, TermStatistics statistics, NpgsqlTsQuery retrieval)
    {
        var command = new NpgsqlCommand();
        var parameters = command.Parameters;

        string Add(object value, NpgsqlDbType? type = null)
        {
            var parameter = new NpgsqlParameter { Value = value };
            if (type is { } t)
            {
                parameter.NpgsqlDbType = t;
            }

            parameters.Add(parameter);
            return "$" + parameters.Count;
        }

        Add(tenantId);
        var tenant = SearchSchema.TenantParameter(parameters.Count);
        var n = (double)Math.Max(statistics.Documents, 1);
        var score = new StringBuilder();
        foreach (var lexeme in lexemes)
        {
            var idf = Math.Log(1 + (Math.Max(n - lexeme.Documents, 0) + 0.5) / (lexeme.Documents + 0.5));
            score.Append(score.Length == 0 ? "" : " + ")
                .Append(Add(idf * (o.Bm25K1 + 1))).Append("::float8 * (e.search_vector @@ ").Append(Add(new NpgsqlTsQueryLexeme(lexeme.Lexeme))).Append(")::int");
        }

        var scope = new StringBuilder();
        if (filter.ConversationId is { } conversationId)
        {
            scope.Append(" and e.conversation_id = ").Append(Add(conversationId));
        }
        else if (filter.ConversationIds is { } conversationIds)
        {
            scope.Append(" and e.conversation_id = any(").Append(Add(conversationIds.ToArray(), NpgsqlDbType.Array | NpgsqlDbType.Uuid)).Append(')');
        }

        if (filter.Kind is { } kind)
        {
            scope.Append(" and e.kind = ").Append(Add((short)kind));
        }

        var post = new StringBuilder();
        if (filter.Role is { } role)
        {
            post.Append(" and e.role = ").Append(Add(role));
        }

        if (filter.From is { } from)
        {
            post.Append(" and e.created_at >= ").Append(Add(from.UtcDateTime, NpgsqlDbType.TimestampTz));
        }

        if (filter.To is { } to)
        {
            post.Append(" and e.created_at <= ").Append(Add(to.UtcDateTime, NpgsqlDbType.TimestampTz));
        }

        if (filter.Metadata is { Count: > 0 } metadata)
        {
            post.Append(" and e.metadata @> ").Append(Add(JsonSerializer.Serialize(metadata), NpgsqlDbType.Jsonb));
        }

        if (filter.ExcludeFromSequence is { } lo && filter.ExcludeToSequence is { } hi)
        {
            post.Append(" and not (e.kind = 0 and e.sequence between ").Append(Add(lo)).Append(" and ").Append(Add(hi)).Append(')');
        }

        var top = Add(limit);
        var previous = Add(o.PreviousTurnWeight);
        var next = Add(o.NextTurnWeight);
        // Without filters on the hits themselves, only the best smoothed scores need joining back to their entries.
        var preLimit = post.Length == 0 ? $"order by score desc limit {top} * 2 + 20" : "";
        // With them, the entries that fit the filters go before the budget's cut (then the rest, best first, for their
        // shares to neighbouring turns): cutting first dropped exact matches that fit the filters whenever more than the
        // budget of better-scoring entries did not (a user's message among thousands of short assistant turns).
        var fitsFirst = post.Length == 0 ? "" : $"(true{post}) is true desc, ";
        command.CommandText = $"""
            with scored as materialized (
                select e.id, e.conversation_id, e.kind, e.sequence,
                       ({score}) / (1 + {Add(o.Bm25K1)} * (1 - {Add(o.Bm25B)} + {Add(o.Bm25B)} * e.lexeme_count / {Add(statistics.AverageLength)})) as score
                from {schema.Entries} e
                where e.tenant_id = {tenant} and e.search_vector @@ {Add(retrieval)}{scope}
                order by {fitsFirst}score desc limit {Add(o.MaxKeywordCandidates)}
            ),
            messages as (
                select conversation_id, sequence, sum(score) as score
                from (
                    select conversation_id, sequence, score from scored where kind = 0
                    union all select conversation_id, sequence + 1, score * {previous} from scored where kind = 0 and {previous} > 0
                    union all select conversation_id, sequence - 1, score * {next} from scored where kind = 0 and {next} > 0 and sequence > 1
                ) spread
                group by conversation_id, sequence
                {preLimit}
            ),
            ranked as (
                select e.id, e.created_at, m.score
                from messages m join {schema.Entries} e
                  on e.tenant_id = {tenant} and e.conversation_id = m.conversation_id and e.sequence = m.sequence and e.kind = 0
                where true{post}
                union all
                select e.id, e.created_at, s.score
                from scored s join {schema.Entries} e on e.tenant_id = {tenant} and e.id = s.id
                where s.kind = 1{post}
            )
            select id, created_at, score from ranked order by score desc, id limit {top}
            """;
        return command;
    }

    /// <summary>The query's lexemes with their document frequencies, and the tenant's and the searched scope's sizes.</summary>
    private async Task<TermStatistics> StatisticsAsync(
        NpgsqlConnection connection, string tenantId, string query, SearchFilter filter, CancellationToken cancellationToken)
    {
        var schema = database.Schema;
        await using var batch = new NpgsqlBatch(connection);
        var lexemes = new NpgsqlBatchCommand($"""
            select t.lexeme, coalesce(st.documents, 0)
            from (select distinct u.lexeme from unnest(to_tsvector($2::regconfig, $3)) u) t
            left join {schema.Terms} st on st.tenant_id = $1 and st.lexeme = t.lexeme
            """);
        lexemes.Parameters.Add(new NpgsqlParameter { Value = tenantId });
        lexemes.Parameters.Add(new NpgsqlParameter { Value = options.Value.Language });
        lexemes.Parameters.Add(new NpgsqlParameter { Value = query });
        batch.BatchCommands.Add(lexemes);
        batch.BatchCommands.Add(TotalsCommand(schema, tenantId, filter));

        var found = new List<(string Lexeme, long Documents)>();
        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            found.Add((reader.GetString(0), reader.GetInt64(1)));
        }

        await reader.NextResultAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        var documents = reader.GetInt64(0);
        var average = documents == 0 ? 1 : Math.Max(1, reader.GetInt64(1) / (double)documents);
        return new TermStatistics(found, documents, average, reader.GetInt64(2));
    }

    /// <summary>
    /// The tenant's entry count and lexeme total, and the entry count of the scope searched, from the tenant's totals
    /// (<see cref="SearchSchema.Totals"/>: one probe per kind) and, when the search is within some conversations, from
    /// those conversations' statistics alone (probes of the primary key). The tenant's other conversations are not read.
    /// </summary>
    internal static NpgsqlBatchCommand TotalsCommand(SearchSchema schema, string tenantId, SearchFilter filter)
    {
        var conversations = filter.ConversationIds?.ToArray();
        if (filter.ConversationId is { } only)
        {
            conversations = conversations is null || conversations.Contains(only) ? [only] : [];
        }

        var scope = conversations is null
            ? "coalesce(sum(documents) filter (where $2::smallint is null or kind = $2), 0)::bigint"
            : $"""
              (select coalesce(sum(documents), 0)::bigint from {schema.Stats}
               where tenant_id = $1 and conversation_id = any($3) and ($2::smallint is null or kind = $2))
              """;
        var command = new NpgsqlBatchCommand($"""
            select coalesce(sum(documents), 0)::bigint, coalesce(sum(lexemes), 0)::bigint, {scope}
            from {schema.Totals} where tenant_id = $1
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = tenantId });
        command.Parameters.Add(new NpgsqlParameter { Value = filter.Kind is { } k ? (short)k : DBNull.Value, NpgsqlDbType = NpgsqlDbType.Smallint });
        if (conversations is not null)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = conversations, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Uuid });
        }

        return command;
    }

    /// <summary>The query's lexemes with their document counts in the tenant, and the tenant's and the searched scope's sizes.</summary>
    internal sealed record TermStatistics(List<(string Lexeme, long Documents)> Lexemes, long Documents, double AverageLength, long ScopeDocuments);

    /// <summary>The tenant's (<c>$1</c>) entries whose metadata contains <c>$2</c>: one scan of the (tenant, metadata) GIN index.</summary>
    internal static string WithMetadataSql(SearchSchema schema) => $"select id from {schema.Entries} where tenant_id = $1 and metadata @> $2";

    /// <summary>Ids of the tenant's entries whose metadata contains every given pair (for filtering vector hits).</summary>
    public async Task<HashSet<Guid>> WithMetadataAsync(string tenantId, IReadOnlyDictionary<string, string> metadata, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(WithMetadataSql(database.Schema), connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenantId });
        command.Parameters.Add(new NpgsqlParameter { Value = JsonSerializer.Serialize(metadata), NpgsqlDbType = NpgsqlDbType.Jsonb });
        var ids = new HashSet<Guid>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            ids.Add(reader.GetGuid(0));
        }

        return ids;
    }
}
