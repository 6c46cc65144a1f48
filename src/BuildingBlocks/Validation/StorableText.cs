namespace ModularChat.BuildingBlocks.Validation;

/// <summary>Text PostgreSQL can store in <c>text</c> and <c>jsonb</c>: anything but the NUL character (U+0000).</summary>
public static class StorableText
{
    public static bool IsStorable(string text) => !text.Contains('\0', StringComparison.Ordinal);

    /// <summary>
    /// <paramref name="text"/> without NUL characters: for text the service did not get from the client (a model's
    /// answer, a tool's result), which is stored without them rather than failing; a client's own text is refused.
    /// </summary>
    public static string WithoutNul(string text) => IsStorable(text) ? text : text.Replace("\0", "", StringComparison.Ordinal);

    /// <summary>
    /// At most the first <paramref name="maxLength"/> UTF-16 code units of <paramref name="text"/>, never half of a
    /// surrogate pair: a character cut in two is stored (and serialized) as U+FFFD, not as what was said.
    /// </summary>
    public static string Prefix(string text, int maxLength)
        => text.Length <= maxLength ? text : text[..(maxLength > 0 && char.IsHighSurrogate(text[maxLength - 1]) ? maxLength - 1 : maxLength)];
}
