using ModularChat.Search.Storage;

namespace ModularChat.Search.Embeddings;

/// <summary>What is embedded for an entry, and its fingerprint (a vector is reused while the fingerprint and model match).</summary>
internal static class EmbeddingText
{
    /// <summary>Longest text sent to an embedding model (about 2,000 tokens: within every common model's input limit).</summary>
    public const int MaxCharacters = 8000;

    /// <summary>A message is embedded with its speaker ("Caroline: I went to a support group"), so questions naming people match.</summary>
    public static string For(EntryKind kind, string? speaker, string content)
    {
        var text = kind == EntryKind.Message && !string.IsNullOrWhiteSpace(speaker) ? $"{speaker}: {content}" : content;
        return text.Length <= MaxCharacters ? text : text[..MaxCharacters];
    }

    public static long Fingerprint(string text) => unchecked((long)StableHash.Of("t:", text));
}
