using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Options;
using ModularChat.Search.Storage;
using Npgsql;

namespace ModularChat.Search.Searching;

/// <summary>A span of a snippet that matched the query.</summary>
public sealed record Highlight(int Start, int Length);

/// <summary>A neighbouring turn returned with a hit; <c>CreatedAt</c> with the offset it was written with, as the hit's.</summary>
public sealed record ContextTurn(long Sequence, string? Role, string? Speaker, string? ExternalId, DateTimeOffset CreatedAt, string Content);

/// <summary>What a hit shows besides its rank.</summary>
internal sealed record EntryDetails(
    Guid Id,
    Guid ConversationId,
    EntryKind Kind,
    long Sequence,
    long? FromSequence,
    int? Revision,
    string? Role,
    string? Speaker,
    string? ExternalId,
    IReadOnlyDictionary<string, string>? Metadata,
    DateTimeOffset CreatedAt,
    string Snippet,
    IReadOnlyList<Highlight> Highlights,
    string HighlightedSnippet);

/// <summary>
/// Loads what hits display: PostgreSQL's <c>ts_headline</c> picks the fragments of the text around the query's
/// words; the markers it inserts become highlight offsets (and &lt;mark&gt; tags in an HTML-escaped copy).
/// </summary>
internal sealed class HitDetails(SearchDatabase database, IOptions<SearchOptions> options)
{
    private const char Start = '\u0002';
    private const char Stop = '\u0003';

    // PostgreSQL's text-search parser takes "<...>" for an XML tag and leaves it out of headlines: the brackets travel as
    // two control characters (blanks to the parser, like the angle brackets the projection indexes them as) and come back
    // here. Those control characters and the markers would be read as brackets and highlights if a message held them: in
    // the text given to ts_headline they become U+FFFD, the only characters a snippet does not show as written.
    private const char OpeningBracket = '\u000E';
    private const char ClosingBracket = '\u000F';
    private const char Replaced = '\uFFFD';
    private const int MaxContextCharacters = 2000;

    /// <summary>What the text given to ts_headline replaces (<c>translate</c>'s second argument)...</summary>
    private static readonly string Escaped = new(['<', '>', Start, Stop, OpeningBracket, ClosingBracket]);

    /// <summary>... and by what (its third).</summary>
    private static readonly string Escapes = new([OpeningBracket, ClosingBracket, Replaced, Replaced, Replaced, Replaced]);

    /// <summary>
    /// A text up to this many characters is its own snippet, whole, with its matches marked: ts_headline's fragments would
    /// drop words at either end of a short message (and the punctuation before its first word). Where ts_headline shows
    /// nothing (a query with no words, or a text whose only word is too long for the parser: over 2047 characters, such as
    /// a pasted key or base64 blob found by meaning), the snippet is the text's first this many characters.
    /// </summary>
    private const int WholeTextLength = 300;

    public async Task<Dictionary<Guid, EntryDetails>> LoadAsync(string tenantId, string query, IReadOnlyCollection<Guid> ids, CancellationToken cancellationToken)
    {
        var result = new Dictionary<Guid, EntryDetails>(ids.Count);
        if (ids.Count == 0)
        {
            return result;
        }

        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand($"""
            with q as (
                select string_agg(('''' || replace(replace(t.lexeme, '\', '\\'), '''', '''''') || '''')::tsquery::text, ' | ')::tsquery as any_term
                from unnest(to_tsvector($2::regconfig, $3)) t
            )
            select e.id, e.conversation_id, e.kind, e.sequence, e.from_sequence, e.revision, e.role, e.speaker, e.external_id, e.metadata::text,
                   e.created_at, e.created_offset,
                   case when btrim(coalesce(h.headline, '')) = '' then left(translate(e.content, $6, $7), {WholeTextLength}) else h.headline end
            from {database.Schema.EntriesById(1, 4)} cross join q
            cross join lateral (
                select case when q.any_term is null then null
                            when char_length(e.content) <= {WholeTextLength} then ts_headline($2::regconfig, translate(e.content, $6, $7), q.any_term, $8)
                            else ts_headline($2::regconfig, translate(e.content, $6, $7), q.any_term, $5) end as headline
            ) h
            """, connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenantId });
        command.Parameters.Add(new NpgsqlParameter { Value = options.Value.Language });
        command.Parameters.Add(new NpgsqlParameter { Value = query });
        command.Parameters.Add(new NpgsqlParameter { Value = ids.ToArray() });
        command.Parameters.Add(new NpgsqlParameter
        {
            Value = $"StartSel=\"{Start}\", StopSel=\"{Stop}\", MaxWords=35, MinWords=12, MaxFragments=2, FragmentDelimiter=\" … \"",
        });
        command.Parameters.Add(new NpgsqlParameter { Value = Escaped });
        command.Parameters.Add(new NpgsqlParameter { Value = Escapes });
        command.Parameters.Add(new NpgsqlParameter { Value = $"StartSel=\"{Start}\", StopSel=\"{Stop}\", HighlightAll=true" });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var (snippet, highlights, html) = Mark(reader.GetString(12));
            var details = new EntryDetails(
                reader.GetGuid(0),
                reader.GetGuid(1),
                (EntryKind)reader.GetInt16(2),
                reader.GetInt64(3),
                reader.IsDBNull(4) ? null : reader.GetInt64(4),
                reader.IsDBNull(5) ? null : reader.GetInt32(5),
                reader.IsDBNull(6) ? null : reader.GetString(6),
                reader.IsDBNull(7) ? null : reader.GetString(7),
                reader.IsDBNull(8) ? null : reader.GetString(8),
                reader.IsDBNull(9) ? null : JsonSerializer.Deserialize<Dictionary<string, string>>(reader.GetString(9)),
                WrittenAt(reader, 10),
                snippet,
                highlights,
                html);
            result[details.Id] = details;
        }

        return result;
    }

    /// <summary>Up to <paramref name="turns"/> messages before and after each message hit.</summary>
    public async Task<Dictionary<Guid, (List<ContextTurn> Before, List<ContextTurn> After)>> ContextAsync(
        string tenantId, IReadOnlyCollection<EntryDetails> hits, int turns, CancellationToken cancellationToken)
    {
        var result = new Dictionary<Guid, (List<ContextTurn> Before, List<ContextTurn> After)>();
        var messages = hits.Where(h => h.Kind == EntryKind.Message).ToList();
        if (turns <= 0 || messages.Count == 0)
        {
            return result;
        }

        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand($"""
            select h.id, h.sequence, e.sequence, e.role, e.speaker, e.external_id, e.created_at, e.created_offset, left(e.content, {MaxContextCharacters})
            from unnest($2::uuid[], $3::uuid[], $4::bigint[]) as h(id, conversation_id, sequence)
            join {database.Schema.Entries} e
              on e.tenant_id = $1 and e.conversation_id = h.conversation_id and e.kind = 0
             and e.sequence between h.sequence - $5 and h.sequence + $5 and e.sequence <> h.sequence
            order by h.id, e.sequence
            """, connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenantId });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.Id).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.ConversationId).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = messages.Select(m => m.Sequence).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = (long)turns });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var id = reader.GetGuid(0);
            if (!result.TryGetValue(id, out var lists))
            {
                result[id] = lists = ([], []);
            }

            var turn = new ContextTurn(reader.GetInt64(2), reader.IsDBNull(3) ? null : reader.GetString(3), reader.IsDBNull(4) ? null : reader.GetString(4),
                reader.IsDBNull(5) ? null : reader.GetString(5), WrittenAt(reader, 6), reader.GetString(8));
            (turn.Sequence < reader.GetInt64(1) ? lists.Before : lists.After).Add(turn);
        }

        return result;
    }

    /// <summary>
    /// The time of an entry (column <paramref name="column"/>, its offset in minutes the next one) with the offset it was
    /// written with, as <c>GET /api/conversations/{id}/messages</c> gives it: the same instant, the same text. UTC for an
    /// entry indexed before the offset was kept, or one that the offset would take out of .NET's range.
    /// </summary>
    private static DateTimeOffset WrittenAt(NpgsqlDataReader reader, int column)
    {
        var utc = reader.GetFieldValue<DateTimeOffset>(column);
        if (reader.IsDBNull(column + 1))
        {
            return utc;
        }

        var offset = TimeSpan.FromMinutes(reader.GetInt16(column + 1));
        var local = utc.UtcTicks + offset.Ticks;
        return local < DateTime.MinValue.Ticks || local > DateTime.MaxValue.Ticks ? utc : utc.ToOffset(offset);
    }

    /// <summary>Turns ts_headline's markers into a plain snippet with highlight offsets, and an HTML-escaped copy with &lt;mark&gt; tags.</summary>
    internal static (string Snippet, List<Highlight> Highlights, string Html) Mark(string headline)
    {
        var plain = new StringBuilder(headline.Length);
        var html = new StringBuilder(headline.Length + 32);
        var highlights = new List<Highlight>();
        var segment = new StringBuilder();
        var start = -1;
        foreach (var c in headline)
        {
            if (c == Start)
            {
                html.Append(WebUtility.HtmlEncode(segment.ToString()));
                segment.Clear();
                start = plain.Length;
            }
            else if (c == Stop)
            {
                if (start >= 0 && plain.Length > start)
                {
                    highlights.Add(new Highlight(start, plain.Length - start));
                    html.Append("<mark>").Append(WebUtility.HtmlEncode(segment.ToString())).Append("</mark>");
                }
                else
                {
                    html.Append(WebUtility.HtmlEncode(segment.ToString()));
                }

                segment.Clear();
                start = -1;
            }
            else
            {
                var original = c switch
                {
                    OpeningBracket => '<',
                    ClosingBracket => '>',
                    _ => c,
                };
                plain.Append(original);
                segment.Append(original);
            }
        }

        html.Append(WebUtility.HtmlEncode(segment.ToString()));
        return (plain.ToString(), highlights, html.ToString());
    }
}
