using System.Buffers.Text;
using System.Text;
using ModularChat.BuildingBlocks.Errors;

namespace ModularChat.BuildingBlocks.Paging;

/// <summary>
/// Opaque pagination cursors: a kind prefix and '|'-separated fields, base64url-encoded.
/// Clients treat them as opaque; a cursor of the wrong kind or shape is a 400.
/// </summary>
public static class Cursor
{
    /// <summary>Encodes <paramref name="fields"/> under <paramref name="kind"/>.</summary>
    public static string Encode(string kind, params string[] fields)
        => Base64Url.EncodeToString(Encoding.UTF8.GetBytes(kind + ":" + string.Join('|', fields)));

    /// <summary>Decodes a cursor of <paramref name="kind"/> with exactly <paramref name="fieldCount"/> fields.</summary>
    /// <exception cref="BadRequestException">The cursor is not one this API issued for this kind of list.</exception>
    public static string[] Decode(string cursor, string kind, int fieldCount, string parameterName = "cursor")
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
        return fields.Length == fieldCount ? fields : throw Invalid(parameterName);
    }

    /// <summary>The error for a cursor that does not decode.</summary>
    public static BadRequestException Invalid(string parameterName = "cursor")
        => new(parameterName, $"'{parameterName}' is not a valid cursor for this list: pass the value of 'nextCursor' from a previous page unchanged.");
}

/// <summary>One page of a list and the cursor of the next page (null on the last page).</summary>
public sealed record Page<T>(IReadOnlyList<T> Items, string? NextCursor);
