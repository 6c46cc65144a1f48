using System.Collections.Concurrent;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace ModularChat.Testing.Fakes;

/// <summary>What the fake model answers to one chat-completions request.</summary>
/// <param name="Content">The assistant's text (streamed word by word when the client streams).</param>
/// <param name="ToolCalls">Tool calls instead of (or besides) text; finish_reason becomes "tool_calls".</param>
/// <param name="Status">HTTP status; anything but 200 answers an OpenAI-style error body with <paramref name="ErrorMessage"/>.</param>
/// <param name="Delay">Wait before answering (or between streamed chunks, when <paramref name="ChunkDelay"/> is set).</param>
/// <param name="RawBody">Answered as it is, with status 200 and <c>application/json</c>, to a plain or a streaming request
/// alike: something that is not the protocol, as a misconfigured gateway answers.</param>
/// <param name="Hold">When set, the answer waits for it to complete (a test releases a model it holds back), after <paramref name="Delay"/>.</param>
/// <param name="StreamEnd">To a streaming request: the data of the events sent, as they are, after the text of the answer
/// instead of its end (finish reason, usage, <c>[DONE]</c>), after which the stream ends: what a model that fails in the
/// middle of its answer sends, such as OpenAI's <c>{"error":{"message":...,"type":"server_error"}}</c>.</param>
public sealed record FakeReply(
    string? Content = null,
    IReadOnlyList<FakeToolCall>? ToolCalls = null,
    int Status = 200,
    string? ErrorMessage = null,
    TimeSpan Delay = default,
    TimeSpan ChunkDelay = default,
    int? PromptTokens = null,
    int? CompletionTokens = null,
    string? RawBody = null,
    Task? Hold = null,
    IReadOnlyList<string>? StreamEnd = null)
{
    public static FakeReply Text(string content) => new(content);

    public static FakeReply Error(int status, string message) => new(Status: status, ErrorMessage: message);

    public static FakeReply Calls(params FakeToolCall[] calls) => new(ToolCalls: calls);
}

/// <summary>A function call the fake model asks for.</summary>
public sealed record FakeToolCall(string Id, string Name, string ArgumentsJson);

/// <summary>A request the fake server received.</summary>
public sealed record RecordedRequest(string Path, string? Authorization, JsonNode Body)
{
    /// <summary>The <c>api-key</c> header (how Azure OpenAI clients send their key), when present.</summary>
    public string? ApiKeyHeader { get; init; }

    /// <summary>The chat messages of a chat-completions request.</summary>
    public JsonArray Messages => Body["messages"]?.AsArray() ?? [];

    /// <summary>The names of the tools offered in a chat-completions request.</summary>
    public IReadOnlyList<string> ToolNames => (Body["tools"]?.AsArray() ?? []).Select(t => t?["function"]?["name"]?.GetValue<string>() ?? "").ToList();

    public bool Stream => Body["stream"]?.GetValue<bool>() == true;
}

/// <summary>
/// A real HTTP server on loopback that speaks the OpenAI chat-completions and embeddings protocol
/// (plain and streaming, tool calls, errors, delays), standing in for a paid LLM in tests and benchmarks.
/// Point an OpenAI-compatible client at <see cref="BaseUrl"/>.
/// </summary>
public sealed class FakeOpenAiServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private FakeOpenAiServer(WebApplication app) => _app = app;

    /// <summary>The API root to configure as the endpoint, e.g. http://127.0.0.1:41234/v1.</summary>
    public Uri BaseUrl { get; private set; } = null!;

    /// <summary>Every request received, in order.</summary>
    public ConcurrentQueue<RecordedRequest> Requests { get; } = new();

    /// <summary>Chat requests whose client went away before the answer was complete (a cancelled stream).</summary>
    public int AbortedRequests => _aborted;

    private int _aborted;

    /// <summary>When set, requests without "Authorization: Bearer {key}" answer 401 like OpenAI does.</summary>
    public string? RequiredApiKey { get; set; }

    /// <summary>Decides each chat answer. Default: echoes the last user message.</summary>
    public Func<RecordedRequest, FakeReply> Responder { get; set; } = request =>
        FakeReply.Text("You said: " + (request.Messages.LastOrDefault(m => m?["role"]?.GetValue<string>() == "user")?["content"]?.ToString() ?? ""));

    /// <summary>An error to answer an embeddings request with instead of embeddings (null: none, the default).</summary>
    public Func<RecordedRequest, FakeReply?> EmbeddingFailure { get; set; } = _ => null;

    /// <summary>
    /// Awaited before an embeddings request is answered (default: nothing to wait for): a test holds back a slow model's
    /// answers with it, and releases them when it is done.
    /// </summary>
    public Func<RecordedRequest, Task> BeforeEmbedding { get; set; } = _ => Task.CompletedTask;

    /// <summary>Computes embeddings. Default: a deterministic 8-dimensional vector per input.</summary>
    public Func<string, float[]> Embedder { get; set; } = DefaultEmbedding;

    /// <summary>
    /// The embedding of a text as raw JSON, when not null, instead of <see cref="Embedder"/>'s: for what a float array
    /// cannot say, such as a number out of a float's range (a broken model's <c>1e39</c>).
    /// </summary>
    public Func<string, string?> RawEmbedding { get; set; } = _ => null;

    /// <summary>
    /// Answers the chat requests that mention <paramref name="marker"/> with <paramref name="reply"/>, the others as before,
    /// until the returned scope is disposed (other tests' conversations keep the answers they expect).
    /// </summary>
    public IDisposable AnswerAbout(string marker, FakeReply reply)
    {
        var fallback = Responder;
        Responder = r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal) ? reply : fallback(r);
        return new ResponderScope(this, fallback);
    }

    /// <summary>
    /// Answers the chat requests that carry <paramref name="apiKey"/> (as a bearer token or an api-key header) with
    /// <paramref name="reply"/>, the others as before, until the returned scope is disposed: for requests that carry no
    /// marker of the test (a provider test's prompt), a key of the test's own tells them from everyone else's.
    /// </summary>
    public IDisposable AnswerFor(string apiKey, FakeReply reply)
    {
        var fallback = Responder;
        Responder = r => Carries(r, apiKey) ? reply : fallback(r);
        return new ResponderScope(this, fallback);
    }

    /// <summary>The requests received (chat and embeddings) that carry <paramref name="apiKey"/>.</summary>
    public int RequestsWith(string apiKey) => Requests.Count(r => Carries(r, apiKey));

    private static bool Carries(RecordedRequest request, string apiKey) => request.Authorization == "Bearer " + apiKey || request.ApiKeyHeader == apiKey;

    /// <summary>The chat requests received that mention <paramref name="marker"/>.</summary>
    public int RequestsAbout(string marker) => Requests.Count(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal));

    /// <summary>Answers the next chat requests in order with <paramref name="replies"/>, then falls back to the previous responder.</summary>
    public void Enqueue(params FakeReply[] replies)
    {
        var queue = new ConcurrentQueue<FakeReply>(replies);
        var fallback = Responder;
        Responder = r => queue.TryDequeue(out var next) ? next : fallback(r);
    }

    public static async Task<FakeOpenAiServer> StartAsync()
    {
        var app = LoopbackServer.CreateBuilder().Build();
        var server = new FakeOpenAiServer(app);
        app.MapPost("/v1/chat/completions", server.ChatAsync);
        app.MapPost("/v1/embeddings", server.EmbeddingsAsync);
        // Azure OpenAI's v1 API: the same protocol under /openai/v1, the key in an api-key header.
        app.MapPost("/openai/v1/chat/completions", server.ChatAsync);
        app.MapPost("/openai/v1/embeddings", server.EmbeddingsAsync);
        app.MapGet("/v1/models", () => Results.Json(new { @object = "list", data = new[] { new { id = "fake-model", @object = "model" } } }));
        server.BaseUrl = new Uri(await LoopbackServer.StartAsync(app) + "/v1");
        return server;
    }

    private async Task ChatAsync(HttpContext context)
    {
        try
        {
            await AnswerChatAsync(context);
        }
        catch (Exception) when (context.RequestAborted.IsCancellationRequested)
        {
            Interlocked.Increment(ref _aborted);
        }
    }

    private async Task AnswerChatAsync(HttpContext context)
    {
        var request = await RecordAsync(context);
        if (request is null)
        {
            return;
        }

        var reply = Responder(request);
        if (reply.Delay > TimeSpan.Zero && reply.ChunkDelay == TimeSpan.Zero)
        {
            await Task.Delay(reply.Delay, context.RequestAborted);
        }

        if (reply.Hold is { } hold)
        {
            await hold.WaitAsync(context.RequestAborted);
        }

        if (reply.Status != 200)
        {
            await WriteErrorAsync(context, reply.Status, reply.ErrorMessage ?? "error");
            return;
        }

        if (reply.RawBody is not null)
        {
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync(reply.RawBody, context.RequestAborted);
            return;
        }

        var model = request.Body["model"]?.GetValue<string>() ?? "fake-model";
        var promptTokens = reply.PromptTokens ?? Math.Max(1, request.Messages.ToJsonString().Length / 4);
        var completionTokens = reply.CompletionTokens ?? Math.Max(1, (reply.Content ?? "").Length / 4);
        var finish = reply.ToolCalls is { Count: > 0 } ? "tool_calls" : "stop";
        var id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        if (!request.Stream)
        {
            await context.Response.WriteAsJsonAsync(new JsonObject
            {
                ["id"] = id,
                ["object"] = "chat.completion",
                ["created"] = created,
                ["model"] = model,
                ["choices"] = new JsonArray(new JsonObject
                {
                    ["index"] = 0,
                    ["message"] = Message(reply),
                    ["finish_reason"] = finish,
                }),
                ["usage"] = Usage(promptTokens, completionTokens),
            });
            return;
        }

        context.Response.ContentType = "text/event-stream";
        async Task Send(JsonNode chunk)
        {
            await context.Response.WriteAsync("data: " + chunk.ToJsonString() + "\n\n", context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
        }

        JsonObject Chunk(JsonObject delta, string? finishReason) => new()
        {
            ["id"] = id,
            ["object"] = "chat.completion.chunk",
            ["created"] = created,
            ["model"] = model,
            ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["delta"] = delta, ["finish_reason"] = finishReason }),
        };

        await Send(Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "" }, null));
        foreach (var piece in Pieces(reply.Content ?? ""))
        {
            if (reply.ChunkDelay > TimeSpan.Zero)
            {
                await Task.Delay(reply.ChunkDelay, context.RequestAborted);
            }

            await Send(Chunk(new JsonObject { ["content"] = piece }, null));
        }

        if (reply.StreamEnd is { } end)
        {
            foreach (var data in end)
            {
                await context.Response.WriteAsync("data: " + data + "\n\n", context.RequestAborted);
                await context.Response.Body.FlushAsync(context.RequestAborted);
            }

            return;
        }

        var index = 0;
        foreach (var call in reply.ToolCalls ?? [])
        {
            await Send(Chunk(new JsonObject
            {
                ["tool_calls"] = new JsonArray(new JsonObject
                {
                    ["index"] = index++,
                    ["id"] = call.Id,
                    ["type"] = "function",
                    ["function"] = new JsonObject { ["name"] = call.Name, ["arguments"] = call.ArgumentsJson },
                }),
            }, null));
        }

        await Send(Chunk(new JsonObject(), finish));
        if (request.Body["stream_options"]?["include_usage"]?.GetValue<bool>() == true)
        {
            await Send(new JsonObject
            {
                ["id"] = id,
                ["object"] = "chat.completion.chunk",
                ["created"] = created,
                ["model"] = model,
                ["choices"] = new JsonArray(),
                ["usage"] = Usage(promptTokens, completionTokens),
            });
        }

        await context.Response.WriteAsync("data: [DONE]\n\n", context.RequestAborted);
    }

    private async Task EmbeddingsAsync(HttpContext context)
    {
        var request = await RecordAsync(context);
        if (request is null)
        {
            return;
        }

        await BeforeEmbedding(request);
        if (EmbeddingFailure(request) is { Status: not 200 } failure)
        {
            await WriteErrorAsync(context, failure.Status, failure.ErrorMessage ?? "error");
            return;
        }

        var input = request.Body["input"];
        var texts = input is JsonArray array ? array.Select(i => i?.ToString() ?? "").ToList() : [input?.ToString() ?? ""];
        var data = new JsonArray();
        for (var i = 0; i < texts.Count; i++)
        {
            data.Add(new JsonObject
            {
                ["object"] = "embedding",
                ["index"] = i,
                ["embedding"] = RawEmbedding(texts[i]) is { } raw ? JsonNode.Parse(raw) : new JsonArray(Embedder(texts[i]).Select(v => (JsonNode)v).ToArray()),
            });
        }

        var tokens = texts.Sum(t => Math.Max(1, t.Length / 4));
        await context.Response.WriteAsJsonAsync(new JsonObject
        {
            ["object"] = "list",
            ["data"] = data,
            ["model"] = request.Body["model"]?.GetValue<string>() ?? "fake-embedding",
            ["usage"] = new JsonObject { ["prompt_tokens"] = tokens, ["total_tokens"] = tokens },
        });
    }

    private async Task<RecordedRequest?> RecordAsync(HttpContext context)
    {
        var body = await JsonNode.ParseAsync(context.Request.Body) ?? new JsonObject();
        var authorization = context.Request.Headers.Authorization.ToString();
        var apiKey = context.Request.Headers["api-key"].ToString();
        var request = new RecordedRequest(context.Request.Path, authorization.Length == 0 ? null : authorization, body)
        {
            ApiKeyHeader = apiKey.Length == 0 ? null : apiKey,
        };
        Requests.Enqueue(request);
        if (RequiredApiKey is not null && authorization != "Bearer " + RequiredApiKey && apiKey != RequiredApiKey)
        {
            await WriteErrorAsync(context, 401, "Incorrect API key provided.", "invalid_api_key");
            return null;
        }

        return request;
    }

    private static JsonObject Message(FakeReply reply)
    {
        var message = new JsonObject { ["role"] = "assistant", ["content"] = reply.Content };
        if (reply.ToolCalls is { Count: > 0 } calls)
        {
            message["tool_calls"] = new JsonArray(calls.Select(c => (JsonNode)new JsonObject
            {
                ["id"] = c.Id,
                ["type"] = "function",
                ["function"] = new JsonObject { ["name"] = c.Name, ["arguments"] = c.ArgumentsJson },
            }).ToArray());
        }

        return message;
    }

    private static JsonObject Usage(int prompt, int completion)
        => new() { ["prompt_tokens"] = prompt, ["completion_tokens"] = completion, ["total_tokens"] = prompt + completion };

    private static async Task WriteErrorAsync(HttpContext context, int status, string message, string? code = null)
    {
        context.Response.StatusCode = status;
        await context.Response.WriteAsJsonAsync(new JsonObject
        {
            ["error"] = new JsonObject
            {
                ["message"] = message,
                ["type"] = status == 401 ? "invalid_request_error" : "server_error",
                ["code"] = code,
            },
        });
    }

    /// <summary>Splits text into word-sized pieces that keep their spaces, as models stream tokens.</summary>
    private static IEnumerable<string> Pieces(string text)
    {
        var start = 0;
        for (var i = 1; i <= text.Length; i++)
        {
            if (i == text.Length || text[i] == ' ')
            {
                yield return text[start..i];
                start = i;
            }
        }
    }

    private static float[] DefaultEmbedding(string text)
    {
        var vector = new float[8];
        foreach (var (c, i) in Encoding.UTF8.GetBytes(text.ToLowerInvariant()).Select((b, i) => (b, i)))
        {
            vector[(c + i) % 8] += 1;
        }

        var norm = MathF.Sqrt(vector.Sum(v => v * v));
        return norm == 0 ? vector : vector.Select(v => v / norm).ToArray();
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    private sealed class ResponderScope(FakeOpenAiServer server, Func<RecordedRequest, FakeReply> previous) : IDisposable
    {
        public void Dispose() => server.Responder = previous;
    }
}
