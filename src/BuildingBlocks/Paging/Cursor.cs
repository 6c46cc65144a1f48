using System.Buffers.Text;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using ModularChat.BuildingBlocks.Errors;

namespace ModularChat.BuildingBlocks.Paging;

/// <summary>
/// Opaque pagination cursors: a kind prefix, a fingerprint of the list's scope and '|'-separated fields, base64url-encoded.
/// The scope is what chose the list (its conversation, its filters): a cursor continues only the list it was issued for,
/// so one sent with other filters or for another conversation is a 400 rather than a walk that skips or repeats items.
/// Clients treat cursors as opaque; a cursor of the wrong kind, scope or shape is a 400.
/// </summary>
public static class Cursor
{
    /// <summary>Encodes <paramref name="fields"/> under <paramref name="kind"/>, bound to <paramref name="scope"/>.</summary>
    public static string Encode(string kind, CursorScope scope, params string[] fields)
        => Base64Url.EncodeToString(Encoding.UTF8.GetBytes(kind + ":" + scope.Fingerprint + "|" + string.Join('|', fields)));

    /// <summary>Decodes a cursor of <paramref name="kind"/> issued for <paramref name="scope"/>, with exactly <paramref name="fieldCount"/> fields.</summary>
    /// <exception cref="BadRequestException">
    /// The cursor is not one this API issued for this kind of list, or it was issued for the same list with other parameters.
    /// </exception>
    public static string[] Decode(string cursor, string kind, CursorScope scope, int fieldCount, string parameterName = "cursor")
    {
        string text;
        try
        {
            text = Encoding.UTF8.GetString(Base64Url.DecodeFromChars(cursor));
        }
        catch (FormatException)
        {
            throw Invalid(parameterName);
        }

        if (!text.StartsWith(kind + ":", StringComparison.Ordinal))
        {
            throw Invalid(parameterName);
        }

        var fields = text[(kind.Length + 1)..].Split('|');
        if (fields.Length != fieldCount + 1)
        {
            throw Invalid(parameterName);
        }

        return fields[0] == scope.Fingerprint
            ? fields[1..]
            : throw new BadRequestException(parameterName,
                $"'{parameterName}' was issued for another list (another conversation, or other filters): send it with the same parameters as the page it came from, or start again without it.");
    }

    /// <summary>
    /// The cursor of a list ordered by a moment, then an id (keyset): <paramref name="at"/> in UTC ticks and
    /// <paramref name="id"/>, those of the page's last item.
    /// </summary>
    public static string EncodeMoment(string kind, CursorScope scope, DateTimeOffset at, Guid id)
        => Encode(kind, scope, at.UtcTicks.ToString(CultureInfo.InvariantCulture), id.ToString("N"));

    /// <summary>The moment and id of a cursor made by <see cref="EncodeMoment"/>.</summary>
    /// <exception cref="BadRequestException">The cursor is not one of this list, or its fields do not read.</exception>
    public static (DateTimeOffset At, Guid Id) DecodeMoment(string cursor, string kind, CursorScope scope)
    {
        var fields = Decode(cursor, kind, scope, 2);
        return long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var ticks)
               && ticks <= DateTimeOffset.MaxValue.UtcTicks
               && Guid.TryParseExact(fields[1], "N", out var id)
            ? (new DateTimeOffset(ticks, TimeSpan.Zero), id)
            : throw Invalid();
    }

    /// <summary>The error for a cursor that does not decode.</summary>
    public static BadRequestException Invalid(string parameterName = "cursor")
        => new(parameterName, $"'{parameterName}' is not a valid cursor for this list: pass the value of 'nextCursor' from a previous page unchanged.");
}

/// <summary>
/// What chose a paged list, which its cursors are bound to: named parts (a conversation id, a filter) in a fixed order.
/// Only a fingerprint travels in the cursor (a hash: the cursor does not repeat the filters' values).
/// </summary>
public readonly record struct CursorScope
{
    private readonly string? _fingerprint;

    private CursorScope(string fingerprint) => _fingerprint = fingerprint;

    /// <summary>A list chosen by nothing but its kind (and the caller's tenant).</summary>
    public static CursorScope None => default;

    /// <summary>The first 9 bytes of the SHA-256 of the parts, base64url (12 characters); "-" for <see cref="None"/>.</summary>
    internal string Fingerprint => _fingerprint ?? "-";

    /// <summary>
    /// A scope of <paramref name="parts"/>: names and values. Values may hold any character (each is length-prefixed); order
    /// the parts the same way on every call (sort a filter list whose order does not matter).
    /// </summary>
    public static CursorScope Of(params (string Name, string Value)[] parts)
    {
        if (parts.Length == 0)
        {
            return None;
        }

        var text = new StringBuilder();
        foreach (var (name, value) in parts)
        {
            text.Append(name.Length).Append(':').Append(name).Append(value.Length).Append(':').Append(value);
        }

        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString()));
        return new CursorScope(Base64Url.EncodeToString(hash.AsSpan(0, 9)));
    }
}

/// <summary>One page of a list and the cursor of the next page (null on the last page).</summary>
public sealed record Page<T>(IReadOnlyList<T> Items, string? NextCursor);
