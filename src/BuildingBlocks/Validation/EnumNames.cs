namespace ModularChat.BuildingBlocks.Validation;

/// <summary>
/// Enum values as clients send them in query strings: one of the names, in any case, and nothing else. <see cref="Enum.TryParse{TEnum}(string?, bool, out TEnum)"/>
/// also takes numbers ("7", undefined values included) and comma-separated lists, which it combines as flags; and a
/// query parameter sent twice reaches the handler as "a,b". Neither is a value a client meant.
/// </summary>
public static class EnumNames
{
    /// <summary>Whether <paramref name="text"/> is exactly one of <typeparamref name="T"/>'s names, ignoring case.</summary>
    public static bool TryParse<T>(string? text, out T value)
        where T : struct, Enum
    {
        foreach (var name in Enum.GetNames<T>())
        {
            if (string.Equals(name, text, StringComparison.OrdinalIgnoreCase))
            {
                value = Enum.Parse<T>(name);
                return true;
            }
        }

        value = default;
        return false;
    }

    /// <summary>The value named by <paramref name="text"/>, which validation has already accepted.</summary>
    /// <exception cref="ArgumentException">It is not one of the names.</exception>
    public static T Parse<T>(string text)
        where T : struct, Enum
        => TryParse<T>(text, out var value) ? value : throw new ArgumentException($"'{text}' is not a {typeof(T).Name}.", nameof(text));
}
