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
/// configured text-search configuration) are OR-ed; the GIN index on the entries' tsvector finds every entry with
/// at least one of them. They are ranked with BM25 (term frequency taken as 1, as chat turns rarely repeat a word):
/// each matching lexeme adds its inverse document frequency, computed in the same statement from the candidates
/// (every entry containing a lexeme is a candidate) and the per-conversation statistics the projection keeps, and
/// shorter entries weigh more. A message then inherits a share of its previous and next turn's scores.
/// </summary>
internal sealed class KeywordSearch(SearchDatabase database, IOptions<SearchOptions> options)
{
    public async Task<IReadOnlyList<KeywordCandidate>> SearchAsync(string tenantId, string query, SearchFilter filter, int limit, CancellationToken cancellationToken)
    {
        var o = options.Value;
        var schema = database.Schema;
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand { Connection = connection };
        var parameters = command.Parameters;
        parameters.Add(new NpgsqlParameter { Value = tenantId });
        parameters.Add(new NpgsqlParameter { Value = o.Language });
        parameters.Add(new NpgsqlParameter { Value = query });
        parameters.Add(new NpgsqlParameter { Value = o.Bm25K1 });
        parameters.Add(new NpgsqlParameter { Value = o.Bm25B });
        parameters.Add(new NpgsqlParameter { Value = o.PreviousTurnWeight });
        parameters.Add(new NpgsqlParameter { Value = o.NextTurnWeight });
        parameters.Add(new NpgsqlParameter { Value = limit });

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

        // The scope limits both the candidates and the collection statistics.
        var candidates = new StringBuilder();
        var statistics = new StringBuilder();
        if (filter.ConversationId is { } conversationId)
        {
            var p = Add(conversationId);
            candidates.Append(" and e.conversation_id = ").Append(p);
            statistics.Append(" and conversation_id = ").Append(p);
        }

        if (filter.Kind is { } kind)
        {
            var p = Add((short)kind);
            candidates.Append(" and e.kind = ").Append(p);
            statistics.Append(" and kind = ").Append(p);
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

        // Without filters on the hits themselves, only the best smoothed scores need joining back to their entries.
        var preLimit = post.Length == 0 ? "order by score desc limit $8 * 2 + 20" : "";
        command.CommandText = $"""
            with terms as (
                select distinct t.lexeme, ('''' || replace(replace(t.lexeme, '\', '\\'), '''', '''''') || '''')::tsquery as query
                from unnest(to_tsvector($2::regconfig, $3)) t
            ),
            q as (select string_agg(query::text, ' | ')::tsquery as any_term from terms),
            cand as materialized (
                select e.id, e.conversation_id, e.kind, e.sequence, e.lexeme_count, e.search_vector
                from {schema.Entries} e cross join q
                where e.tenant_id = $1 and e.search_vector @@ q.any_term{candidates}
            ),
            matched as (select c.id, t.lexeme from cand c join terms t on c.search_vector @@ t.query),
            df as (select lexeme, count(*)::float8 as n from matched group by lexeme),
            stats as (
                select greatest(coalesce(sum(documents), 0), 1)::float8 as documents,
                       greatest(coalesce(sum(lexemes), 0)::float8 / greatest(coalesce(sum(documents), 0), 1), 1) as average_length
                from {schema.Stats} where tenant_id = $1{statistics}
            ),
            scored as (
                select c.id, c.conversation_id, c.kind, c.sequence,
                       sum(ln(1 + (greatest(s.documents - df.n, 0) + 0.5) / (df.n + 0.5)))
                         * ($4 + 1) / (1 + $4 * (1 - $5 + $5 * c.lexeme_count / s.average_length)) as score
                from matched m join df on df.lexeme = m.lexeme join cand c on c.id = m.id cross join stats s
                group by c.id, c.conversation_id, c.kind, c.sequence, c.lexeme_count, s.average_length
            ),
            messages as (
                select conversation_id, sequence, sum(score) as score
                from (
                    select conversation_id, sequence, score from scored where kind = 0
                    union all select conversation_id, sequence + 1, score * $6 from scored where kind = 0 and $6 > 0
                    union all select conversation_id, sequence - 1, score * $7 from scored where kind = 0 and $7 > 0 and sequence > 1
                ) spread
                group by conversation_id, sequence
                {preLimit}
            ),
            ranked as (
                select e.id, e.created_at, m.score
                from messages m join {schema.Entries} e
                  on e.tenant_id = $1 and e.conversation_id = m.conversation_id and e.sequence = m.sequence and e.kind = 0
                where true{post}
                union all
                select e.id, e.created_at, s.score
                from scored s join {schema.Entries} e on e.tenant_id = $1 and e.id = s.id
                where s.kind = 1{post}
            )
            select id, created_at, score from ranked order by score desc, id limit $8
            """;

        var result = new List<KeywordCandidate>(limit);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            result.Add(new KeywordCandidate(reader.GetGuid(0), reader.GetDouble(2), reader.GetFieldValue<DateTimeOffset>(1)));
        }

        return result;
    }

    /// <summary>Ids of the tenant's entries whose metadata contains every given pair (for filtering vector hits).</summary>
    public async Task<HashSet<Guid>> WithMetadataAsync(string tenantId, IReadOnlyDictionary<string, string> metadata, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand($"select id from {database.Schema.Entries} where tenant_id = $1 and metadata @> $2", connection);
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
