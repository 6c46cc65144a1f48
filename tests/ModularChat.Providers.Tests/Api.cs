global using ModularChat.Testing;
using System.Net;
using System.Text.Json;

namespace ModularChat.Providers.Tests;

/// <summary>Small helpers over HttpClient for reading the API the way a client does.</summary>
internal static class Api
{
    /// <summary>Asserts a 400 whose errors name <paramref name="field"/>.</summary>
    public static async Task ShouldNameField(this HttpResponseMessage response, string field)
    {
        var problem = await response.ShouldBeProblem(400);
        var errors = problem.GetProperty("errors");
        Assert.True(errors.TryGetProperty(field, out _), $"Expected an error for '{field}' in {problem}");
    }

    /// <summary>A new conversation of the client's tenant.</summary>
    public static async Task<Guid> StartConversationAsync(this HttpClient client, string title = "chat")
    {
        var created = await (await client.PostJson("/api/conversations", new { title })).ReadAs<IdDto>(HttpStatusCode.Created);
        return created.Id;
    }

    /// <summary>Adds a provider pointed at <paramref name="endpoint"/> and returns it.</summary>
    public static async Task<ProviderDto> AddProviderAsync(this HttpClient client, Uri endpoint, string? apiKey = "sk-test-key-0123456789abcdef",
        string name = "fake", string kind = "openai-compatible", bool? isDefault = null, string chatModel = "fake-model", string? summaryModel = null)
        => await (await client.PostJson("/api/providers", new
        {
            name, kind, endpoint = endpoint.ToString(), chatModel, summaryModel, embeddingModel = "fake-embedding", apiKey, isDefault,
        })).ReadAs<ProviderDto>(HttpStatusCode.Created);

    /// <summary>Adds an MCP server reached over HTTP (<c>streamable-http</c> or <c>sse</c>) and returns it.</summary>
    public static async Task<McpServerDto> AddMcpServerAsync(this HttpClient client, string name, string url, string transport = "streamable-http")
        => await (await client.PostJson("/api/mcp-servers", new { name, transport, url })).ReadAs<McpServerDto>(HttpStatusCode.Created);

    /// <summary>A chat turn in <paramref name="conversationId"/> that must succeed (200), and its answer.</summary>
    public static async Task<ChatTurnDto> ChatAsync(this HttpClient client, Guid conversationId, string content)
        => await (await client.PostJson($"/api/conversations/{conversationId}/chat", new { content })).ReadAs<ChatTurnDto>(HttpStatusCode.OK);

    public static async Task<List<MessageDto>> MessagesAsync(this HttpClient client, Guid conversationId)
        => (await (await client.GetAsync($"/api/conversations/{conversationId}/messages?limit=500")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK)).Items;
}

internal sealed record IdDto(Guid Id);

internal sealed record ProviderDto(Guid Id, string Name, string Kind, string Endpoint, string ChatModel, string? SummaryModel, string? EmbeddingModel,
    bool HasApiKey, string? ApiKeyHint, bool IsDefault);

internal sealed record ProviderTestDto(bool Success, string Provider, string Model, double LatencyMs, string? Answer, long? InputTokens, long? OutputTokens,
    ProviderTestErrorDto? Error);

internal sealed record ProviderTestErrorDto(int? ProviderStatus, string Message);

internal sealed record McpToolDto(string Name, string? Description, JsonElement InputSchema);

internal sealed record McpServerDto(Guid Id, string Name, string Transport, string? Command, List<string> Arguments, Dictionary<string, string> Environment,
    Dictionary<string, string> SecretEnvironment, string? Url, Dictionary<string, string> Headers, Dictionary<string, string> SecretHeaders,
    List<McpToolDto>? Tools, DateTimeOffset? ToolsRefreshedAt, string? ProtocolVersion, string? ServerName, DateTimeOffset? ListingFailedAt = null);

internal sealed record McpServerInfoDto(string Name, string? Version, string? Title);

internal sealed record McpTestDto(bool Success, string Transport, double LatencyMs, string? ProtocolVersion, McpServerInfoDto? Server, List<McpToolDto> Tools,
    string? Error, List<string> Warnings);

internal sealed record MessageDto(Guid Id, long Sequence, string Role, string Content, string? ExternalId, Dictionary<string, string>? Metadata, int TokenCount);

internal sealed record PageDto<T>(List<T> Items, string? NextCursor);

internal sealed record ChatRefDto(Guid Id, long Sequence);

internal sealed record ChatAnswerDto(Guid Id, long Sequence, string Content);

internal sealed record ChatToolCallDto(string CallId, string Server, string Tool, string Arguments, string Result, bool Failed, long CallSequence, long ResultSequence);

internal sealed record ChatUsageDto(long? InputTokens, long? OutputTokens, long? TotalTokens);

internal sealed record ChatContextDto(int Messages, int Tokens, long? SummaryThroughSequence);

internal sealed record ChatTurnDto(Guid ConversationId, ChatRefDto UserMessage, ChatAnswerDto Answer, List<ChatToolCallDto> ToolCalls, string Provider,
    string Model, ChatUsageDto Usage, ChatContextDto Context, double DurationMs);
