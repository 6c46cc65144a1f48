using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ModularChat.Conversations.Tests;

/// <summary>Small helpers over HttpClient for reading the API the way a client does.</summary>
internal static class Api
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    public static async Task<T> ReadAs<T>(this HttpResponseMessage response, HttpStatusCode expected)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"Expected {(int)expected} but got {(int)response.StatusCode}: {body}");
        return JsonSerializer.Deserialize<T>(body, Json)!;
    }

    /// <summary>Asserts an RFC 9457 ProblemDetails with <paramref name="status"/> and returns it.</summary>
    public static async Task<JsonElement> ShouldBeProblem(this HttpResponseMessage response, int status)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == status, $"Expected {status} but got {(int)response.StatusCode}: {body}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonDocument.Parse(body).RootElement;
        Assert.Equal(status, problem.GetProperty("status").GetInt32());
        Assert.False(string.IsNullOrWhiteSpace(problem.GetProperty("title").GetString()));
        return problem;
    }

    public static Task<HttpResponseMessage> PostJson(this HttpClient client, string url, object body)
        => client.PostAsJsonAsync(url, body, Json);

    public static Task<HttpResponseMessage> PostRaw(this HttpClient client, string url, string json)
        => client.PostAsync(url, new StringContent(json, System.Text.Encoding.UTF8, "application/json"));

    public static Task<HttpResponseMessage> PatchJson(this HttpClient client, string url, object body)
        => client.PatchAsJsonAsync(url, body, Json);
}

internal sealed record ConversationDto(Guid Id, string Title, Dictionary<string, string> Metadata, DateTimeOffset CreatedAt,
    DateTimeOffset LastActivityAt, long MessageCount, long TotalTokens, long Version);

internal sealed record MessageDto(Guid Id, long Sequence, string Role, string Content, string? ExternalId,
    Dictionary<string, string>? Metadata, DateTimeOffset CreatedAt, DateTimeOffset AppendedAt, int TokenCount);

internal sealed record PageDto<T>(List<T> Items, string? NextCursor);

internal sealed record AppendResponseDto(Guid ConversationId, Guid Id, long Sequence, string? ExternalId, int TokenCount,
    DateTimeOffset CreatedAt, long Version, bool Duplicate);

internal sealed record AppendedDto(Guid Id, long Sequence, string? ExternalId, int TokenCount, DateTimeOffset CreatedAt, bool Duplicate);

internal sealed record BatchResponseDto(Guid ConversationId, long Version, List<AppendedDto> Messages);
