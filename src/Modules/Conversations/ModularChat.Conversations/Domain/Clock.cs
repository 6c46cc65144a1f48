namespace ModularChat.Conversations.Domain;

internal static class Clock
{
    /// <summary>
    /// PostgreSQL keeps timestamps to the microsecond; truncating server times to that
    /// keeps JSON copies and indexed columns equal, which keyset cursors rely on.
    /// </summary>
    public static DateTimeOffset TruncateToMicroseconds(this DateTimeOffset value)
        => new(value.Ticks - (value.Ticks % 10), value.Offset);
}
