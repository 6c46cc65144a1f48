using System.Globalization;
using ModularChat.Search.Storage;

namespace ModularChat.Search.Embeddings;

/// <summary>What is embedded for an entry, and its fingerprint (a vector is reused while the fingerprint and model match).</summary>
internal static class EmbeddingText
{
    /// <summary>Longest text sent to an embedding model (about 2,000 tokens: within every common model's input limit).</summary>
    public const int MaxCharacters = 8000;

    /// <summary>
    /// A message is embedded with its speaker and the month it was written ("Caroline: I went to a support group (May 2023)"),
    /// so questions naming people or times match.
    /// </summary>
    public static string For(EntryKind kind, string? speaker, string content, DateTime createdAt)
    {
        var text = kind == EntryKind.Message && !string.IsNullOrWhiteSpace(speaker) ? $"{speaker}: {content}" : content;
        var when = $" ({createdAt.ToString("MMMM yyyy", CultureInfo.InvariantCulture)})";
        return (text.Length + when.Length <= MaxCharacters ? text : text[..(MaxCharacters - when.Length)]) + when;
    }

    public static long Fingerprint(string text) => unchecked((long)StableHash.Of("t:", text));
}
