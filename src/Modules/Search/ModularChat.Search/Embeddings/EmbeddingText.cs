using System.Globalization;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Search.Storage;

namespace ModularChat.Search.Embeddings;

/// <summary>What is embedded for an entry, and its fingerprint (a vector is reused while the fingerprint and model match).</summary>
internal static class EmbeddingText
{
    /// <summary>Longest text sent to an embedding model (about 2,000 tokens: within every common model's input limit).</summary>
    public const int MaxCharacters = 8000;

    /// <summary>
    /// A message is embedded with its speaker and the month it was written ("Caroline: I went to a support group (May 2023)"),
    /// so questions naming people or times match. Cut to <see cref="MaxCharacters"/> and to <paramref name="maxTokens"/>
    /// o200k tokens (<see cref="SearchEmbeddingOptions.MaxInputTokens"/>): 8,000 characters are ~2,000 tokens of English
    /// but up to ~8,000 of Chinese or Japanese, more than many embedding models take, which then refuse the text.
    /// </summary>
    public static string For(EntryKind kind, string? speaker, string content, DateTime createdAt, int maxTokens, ITokenCounter tokens)
    {
        var text = kind == EntryKind.Message && !string.IsNullOrWhiteSpace(speaker) ? $"{speaker}: {content}" : content;
        var when = $" ({createdAt.ToString("MMMM yyyy", CultureInfo.InvariantCulture)})";
        text = text.Length + when.Length <= MaxCharacters ? text : text[..(MaxCharacters - when.Length)];
        var length = tokens.PrefixLength(text, Math.Max(1, maxTokens - WhenTokens));
        if (length < text.Length)
        {
            // Not between the two halves of a surrogate pair.
            text = text[..(length > 0 && char.IsHighSurrogate(text[length - 1]) ? length - 1 : length)];
        }

        return text + when;
    }

    /// <summary>What the month and year take, at most (" (September 2024)": 5 tokens), kept out of the text's budget.</summary>
    private const int WhenTokens = 8;

    public static long Fingerprint(string text) => unchecked((long)StableHash.Of("t:", text));
}
