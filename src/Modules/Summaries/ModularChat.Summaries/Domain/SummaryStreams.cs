using System.Security.Cryptography;

namespace ModularChat.Summaries.Domain;

/// <summary>
/// Each conversation's summaries are one event stream in the same store as the conversation's own stream, so the
/// summary stream's id must never equal a conversation id: it is a name-based (version 5) UUID of the conversation id.
/// </summary>
public static class SummaryStreams
{
    /// <summary>The UUID namespace of summary streams (fixed forever: changing it orphans every stream).</summary>
    private static readonly Guid Namespace = new("6f1d3c52-3a0e-4f0b-9a52-5d8c0c9e7a11");

    public static Guid For(Guid conversationId)
    {
        Span<byte> input = stackalloc byte[32];
        Namespace.TryWriteBytes(input[..16], bigEndian: true, out _);
        conversationId.TryWriteBytes(input[16..], bigEndian: true, out _);
        Span<byte> hash = stackalloc byte[20];
        SHA1.HashData(input, hash);
        hash[6] = (byte)((hash[6] & 0x0F) | 0x50); // version 5
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80); // RFC 4122 variant
        return new Guid(hash[..16], bigEndian: true);
    }
}
