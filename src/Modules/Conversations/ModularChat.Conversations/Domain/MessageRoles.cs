using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Domain;

/// <summary>The wire names of message roles ("user", "assistant", "system", "tool").</summary>
public static class MessageRoles
{
    public static readonly IReadOnlyList<string> WireNames = ["user", "assistant", "system", "tool"];

    public static string ToWire(MessageRole role) => role switch
    {
        MessageRole.User => "user",
        MessageRole.Assistant => "assistant",
        MessageRole.System => "system",
        MessageRole.Tool => "tool",
        _ => throw new ArgumentOutOfRangeException(nameof(role), role, null),
    };

    public static bool TryParse(string? wire, out MessageRole role)
    {
        switch (wire?.Trim().ToLowerInvariant())
        {
            case "user": role = MessageRole.User; return true;
            case "assistant": role = MessageRole.Assistant; return true;
            case "system": role = MessageRole.System; return true;
            case "tool": role = MessageRole.Tool; return true;
            default: role = default; return false;
        }
    }
}
