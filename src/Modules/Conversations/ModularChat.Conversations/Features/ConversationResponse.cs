using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations.Features;

/// <summary>A conversation as the API returns it.</summary>
public sealed record ConversationResponse(
    Guid Id,
    string Title,
    IReadOnlyDictionary<string, string> Metadata,
    DateTimeOffset CreatedAt,
    DateTimeOffset LastActivityAt,
    long MessageCount,
    long TotalTokens,
    long Version)
{
    internal static ConversationResponse From(Conversation c)
        => new(c.Id, c.Title, c.Metadata, c.CreatedAt, c.LastActivityAt, c.MessageCount, c.TotalTokens, c.ClientVersion);
}

/// <summary>A message as the API returns it.</summary>
public sealed record MessageResponse(
    Guid Id,
    long Sequence,
    string Role,
    string Content,
    string? ExternalId,
    IReadOnlyDictionary<string, string>? Metadata,
    DateTimeOffset CreatedAt,
    DateTimeOffset AppendedAt,
    int TokenCount)
{
    internal static MessageResponse From(StoredMessage m)
        => new(m.Id, m.Sequence, MessageRoles.ToWire(m.Role), m.Content, m.ExternalId, m.Metadata, m.CreatedAt, m.AppendedAt, m.TokenCount);
}
