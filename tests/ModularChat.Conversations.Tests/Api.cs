global using ModularChat.Testing;
using System.Net;

namespace ModularChat.Conversations.Tests;

// HTTP helpers are shared in ModularChat.Testing (HttpApi); these are the API's shapes as this suite reads them.

internal sealed record ConversationDto(Guid Id, string Title, Dictionary<string, string> Metadata, DateTimeOffset CreatedAt,
    DateTimeOffset LastActivityAt, long MessageCount, long TotalTokens, long Version);

internal sealed record MessageDto(Guid Id, long Sequence, string Role, string Content, string? ExternalId,
    Dictionary<string, string>? Metadata, DateTimeOffset CreatedAt, DateTimeOffset AppendedAt, int TokenCount);

internal sealed record PageDto<T>(List<T> Items, string? NextCursor);

internal sealed record AppendResponseDto(Guid ConversationId, Guid Id, long Sequence, string? ExternalId, int TokenCount,
    DateTimeOffset CreatedAt, long Version, bool Duplicate);

internal sealed record AppendedDto(Guid Id, long Sequence, string? ExternalId, int TokenCount, DateTimeOffset CreatedAt, bool Duplicate);

internal sealed record BatchResponseDto(Guid ConversationId, long Version, List<AppendedDto> Messages);

internal static class ConversationsApi
{
    public static async Task<ConversationDto> NewConversation(this HttpClient client, string title = "test")
        => await (await client.PostJson("/api/conversations", new { title })).ReadAs<ConversationDto>(HttpStatusCode.Created);
}
