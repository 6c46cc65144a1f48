using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace ModularChat.Providers.Tests;

/// <summary>
/// An MCP server over streamable HTTP (JSON answers) written by hand, so that it can answer what the SDK's server never
/// would: tool lists with unusable entries, thousands of tools, endless or looping pages, JSON-RPC errors from a tool, an
/// error result that quotes a credential, a tool list larger than a response may be (also over the legacy SSE transport),
/// a server that repeats the bare token of its Authorization header, one that drops the connection of a tool call.
/// Mapped at <c>/unruly/{mode}</c> and <c>/unruly-sse/{mode}</c> beside <see cref="McpHttpServer"/>'s well-behaved endpoints.
/// </summary>
internal static class UnrulyMcpServer
{
    private static readonly ConcurrentDictionary<string, (TaskCompletionSource Listing, TaskCompletionSource Release)> Gates = new();

    private static readonly ConcurrentDictionary<string, ConcurrentQueue<string>> Received = new();

    private static readonly ConcurrentDictionary<string, TaskCompletionSource> Holds = new();

    /// <summary>
    /// Completes when the tool <c>held</c> of mode <c>held-{key}</c> was called: the call is held unanswered until its client
    /// gives up on it (at most two minutes), so that a test knows when to move its clock past the call's deadline.
    /// </summary>
    public static Task Held(string key) => Holds.GetOrAdd(key, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

    /// <summary>The arguments of each tools/call the server of mode <c>recording-{key}</c> received (as JSON), in order.</summary>
    public static IReadOnlyList<string> CallsReceived(string key) => Received.TryGetValue(key, out var calls) ? [.. calls] : [];

    /// <summary>The replies each open SSE stream (<c>/unruly-sse/{mode}</c>) has yet to send, by its session.</summary>
    private static readonly ConcurrentDictionary<string, Channel<JsonObject>> SseSessions = new();

    /// <summary>
    /// A gate for mode <c>gated-{key}</c>: its tools/list answers only once <c>release</c> is called, and
    /// <c>listing</c> completes when the list was asked for (a test then changes the server in between).
    /// </summary>
    public static (Task Listing, Action Release) Gate(string key)
    {
        var gate = Gates.GetOrAdd(key, _ => (new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously),
            new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)));
        return (gate.Listing.Task, () => gate.Release.TrySetResult());
    }

    /// <summary>What the tool of mode <c>leaky</c> puts in the error result it answers with: a credential, as careless servers do.</summary>
    public const string LeakedCredential = "Bearer abcdefghijklmnopqrstuvwxyz123456";

    /// <summary>
    /// The tools of mode <c>token</c>, each of which repeats what it was sent: <c>whoami</c> describes itself with the
    /// request's Authorization header and answers with the bare token of it, its schema shows the X-Api-Key header as an
    /// example; <c>expired</c> answers with a JSON-RPC error that names the bare token.
    /// </summary>
    public static readonly string[] TokenTools = ["whoami", "expired"];

    /// <summary>The tools of mode <c>odd</c> that are fit to keep (the rest of its list is not).</summary>
    public static readonly string[] OddKeeps = ["lookup", "verbose", "bare"];

    public static void MapUnrulyMcp(this IEndpointRouteBuilder app)
    {
        app.MapPost("/unruly/{mode}", async (string mode, HttpContext context) =>
        {
            var request = await JsonNode.ParseAsync(context.Request.Body) ?? new JsonObject();
            var id = request["id"]?.DeepClone();
            if (id is null)
            {
                return Results.Accepted(); // a notification
            }

            var method = request["method"]?.GetValue<string>();
            var parameters = request["params"] as JsonObject;
            // The credentials of "Authorization: Bearer TOKEN", as a server that names the token it was sent quotes it.
            var authorization = context.Request.Headers.Authorization.ToString();
            var token = authorization[(authorization.IndexOf(' ', StringComparison.Ordinal) + 1)..];
            if (mode.StartsWith("recording-", StringComparison.Ordinal) && method == "tools/call")
            {
                Received.GetOrAdd(mode["recording-".Length..], _ => new()).Enqueue(parameters?["arguments"]?.ToJsonString() ?? "null");
                return Results.Text(Result(id, new JsonObject
                {
                    ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "noted" }),
                }).ToJsonString(), "application/json");
            }

            if (mode == "drop" && method == "tools/call")
            {
                context.Abort(); // the connection goes, with no answer
                return Results.Empty;
            }
            if (mode == "flood" && method == "tools/list" || mode == "flood-call" && method == "tools/call")
            {
                // More than OutboundNetwork:MaxResponseBytes (8 MiB in the tests): the list streamed without a length,
                // the tool's result with one.
                var result = method == "tools/list"
                    ? FloodPage()
                    : new JsonObject { ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = Flood() }) };
                var bytes = System.Text.Encoding.UTF8.GetBytes(Result(id, result).ToJsonString());
                if (method == "tools/call")
                {
                    return Results.Bytes(bytes, "application/json");
                }

                context.Response.ContentType = "application/json";
                await context.Response.StartAsync();
                for (var offset = 0; offset < bytes.Length; offset += 64 * 1024)
                {
                    await context.Response.Body.WriteAsync(bytes.AsMemory(offset, Math.Min(64 * 1024, bytes.Length - offset)));
                }

                return Results.Empty;
            }

            if (mode.StartsWith("gated-", StringComparison.Ordinal) && method == "tools/list" && Gates.TryGetValue(mode[6..], out var gate))
            {
                gate.Listing.TrySetResult();
                await gate.Release.Task.WaitAsync(TimeSpan.FromSeconds(10), context.RequestAborted);
            }

            if (mode.StartsWith("held-", StringComparison.Ordinal) && method == "tools/call")
            {
                Holds.GetOrAdd(mode["held-".Length..], _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
                try
                {
                    await Task.Delay(TimeSpan.FromMinutes(2), context.RequestAborted);
                }
                catch (OperationCanceledException)
                {
                }

                return Results.Empty;
            }

            if (mode == "hang" && method == "tools/call")
            {
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(30), context.RequestAborted); // past Mcp:ToolCallTimeout
                }
                catch (OperationCanceledException)
                {
                }

                return Results.Empty;
            }

            var answer = method switch
            {
                "initialize" when mode == "token-refused" => Error(id, -32001, $"Token {token} has expired"),
                "initialize" => Initialize(id, mode, parameters),
                // A server that names the key it was sent in its error, as some do ("unknown workspace key ...").
                "tools/list" when mode == "echo-key" => Error(id, -32000, $"unknown workspace key {context.Request.Headers["X-Api-Key"]}"),
                "tools/list" when mode == "token" => Result(id, Page([TokenTool(authorization, context.Request.Headers["X-Api-Key"].ToString()), Tool("expired")], null)),
                // A server that names a tool with the token it was sent (a tenant's workspace in the name).
                "tools/list" when mode == "token-name" => Result(id, Page([Tool("whoami_" + token), Tool("expired")], null)),
                "tools/list" => Result(id, ToolPage(mode, parameters?["cursor"]?.GetValue<string>())),
                "tools/call" when mode == "token" && parameters?["name"]?.GetValue<string>() == "whoami" => Result(id, new JsonObject
                {
                    ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = $"authenticated with token {token}" }),
                }),
                "tools/call" when mode == "token" => Error(id, -32000, $"Token {token} has expired"),
                "tools/call" when mode == "echo-headers" => Result(id, EchoHeaders(context.Request.Headers)),
                "tools/call" when mode == "leaky" => Result(id, new JsonObject
                {
                    ["isError"] = true,
                    ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "tool broke " + LeakedCredential }),
                }),
                "tools/call" => Error(id, -32000, $"{parameters?["name"]} exploded: the disk is full"),
                _ => Error(id, -32601, "Method not found"),
            };
            return Results.Text(answer.ToJsonString(), "application/json");
        });
        app.MapGet("/unruly/{mode}", () => Results.StatusCode(StatusCodes.Status405MethodNotAllowed));

        // The legacy SSE transport: the stream announces where to post messages. This one announces another origin.
        app.MapGet("/unruly-sse/elsewhere/{port:int}", async (int port, HttpContext context) =>
        {
            context.Response.ContentType = "text/event-stream";
            await context.Response.WriteAsync($"event: endpoint\ndata: http://127.0.0.1:{port}/messages\n\n", context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(30), context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
            }
        });
        app.MapDelete("/unruly/{mode}", () => Results.Ok());

        // The legacy SSE transport, answering on its stream: mode flood answers tools/list with more than
        // OutboundNetwork:MaxResponseBytes in one event.
        app.MapGet("/unruly-sse/{mode}", async (string mode, HttpContext context) =>
        {
            var session = Guid.NewGuid().ToString("N");
            var replies = Channel.CreateUnbounded<JsonObject>();
            SseSessions[session] = replies;
            try
            {
                context.Response.ContentType = "text/event-stream";
                await context.Response.WriteAsync($"event: endpoint\ndata: /unruly-sse/{mode}/messages?session={session}\n\n", context.RequestAborted);
                await context.Response.Body.FlushAsync(context.RequestAborted);
                await foreach (var reply in replies.Reader.ReadAllAsync(context.RequestAborted))
                {
                    await context.Response.WriteAsync($"event: message\ndata: {reply.ToJsonString()}\n\n", context.RequestAborted);
                    await context.Response.Body.FlushAsync(context.RequestAborted);
                }
            }
            catch (OperationCanceledException)
            {
            }
            finally
            {
                SseSessions.TryRemove(session, out _);
            }
        });
        app.MapPost("/unruly-sse/{mode}/messages", async (string mode, string session, HttpContext context) =>
        {
            var request = await JsonNode.ParseAsync(context.Request.Body) ?? new JsonObject();
            var id = request["id"]?.DeepClone();
            if (id is null || !SseSessions.TryGetValue(session, out var replies))
            {
                return Results.Accepted();
            }

            await replies.Writer.WriteAsync(request["method"]?.GetValue<string>() switch
            {
                "initialize" => Initialize(id, mode, request["params"] as JsonObject),
                "tools/list" when mode == "flood" => Result(id, FloodPage()),
                "tools/list" => Result(id, Page([Tool("echo")], null)),
                _ => Error(id, -32601, "Method not found"),
            });
            return Results.Accepted();
        });
    }

    /// <summary>More than OutboundNetwork:MaxResponseBytes (8 MiB in the tests).</summary>
    private static string Flood() => new('f', 9 * 1024 * 1024);

    private static JsonObject FloodPage() => Page([Tool("flood"), Tool("flood_2", Flood())], null);

    private static JsonObject Initialize(JsonNode id, string mode, JsonObject? parameters) => Result(id, new JsonObject
    {
        ["protocolVersion"] = parameters?["protocolVersion"]?.DeepClone(),
        ["capabilities"] = new JsonObject { ["tools"] = new JsonObject() },
        ["serverInfo"] = new JsonObject { ["name"] = "unruly-" + mode, ["version"] = "0.1" },
    });

    /// <summary>
    /// A successful result that repeats the request's headers, as debugging tools do: as text, as an embedded resource
    /// holding them as JSON (which escapes some characters), and as structured content.
    /// </summary>
    private static JsonObject EchoHeaders(IHeaderDictionary headers)
    {
        var json = new JsonObject();
        foreach (var (name, value) in headers)
        {
            json[name] = value.ToString();
        }

        return new JsonObject
        {
            ["content"] = new JsonArray(
                new JsonObject { ["type"] = "text", ["text"] = string.Join("\n", headers.Select(h => $"{h.Key}: {h.Value}")) },
                new JsonObject
                {
                    ["type"] = "resource",
                    ["resource"] = new JsonObject { ["uri"] = "echo://headers", ["mimeType"] = "application/json", ["text"] = json.ToJsonString() },
                }),
            ["structuredContent"] = new JsonObject { ["headers"] = json },
        };
    }

    private static JsonObject ToolPage(string mode, string? cursor) => mode switch
    {
        // 300 tools, 100 a page.
        "many" => Page(Enumerable.Range(int.Parse(cursor ?? "0", CultureInfo.InvariantCulture), 100).Select(i => Tool($"tool_{i}")),
            cursor == "200" ? null : (int.Parse(cursor ?? "0", CultureInfo.InvariantCulture) + 100).ToString(CultureInfo.InvariantCulture)),
        // One tool a page, and always another page.
        "endless" => Page([Tool("page_" + (cursor ?? "0"))], (int.Parse(cursor ?? "0", CultureInfo.InvariantCulture) + 1).ToString(CultureInfo.InvariantCulture)),
        // Pages a -> b -> a -> ...
        "loop" => Page([Tool("loop_" + (cursor ?? "start"))], cursor == "a" ? "b" : "a"),
        "error" => Page([Tool("explode")], null),
        "leaky" => Page([Tool("leak")], null),
        "echo-headers" => Page([Tool("headers")], null),
        "flood-call" => Page([Tool("flood")], null),
        "hang" => Page([Tool("sleepy")], null),
        _ when mode.StartsWith("held-", StringComparison.Ordinal) => Page([Tool("held")], null),
        "drop" => Page([Tool("fragile")], null),
        "odd" => Page(
        [
            Tool("lookup"),
            JsonValue.Create(42),
            new JsonObject { ["description"] = "no name", ["inputSchema"] = new JsonObject { ["type"] = "object" } },
            Tool("bad\0name"), // PostgreSQL cannot store a NUL: it failed the whole list
            Tool(new string('n', 129)),
            Tool("lookup", "listed twice"),
            new JsonObject { ["name"] = "stringly", ["inputSchema"] = new JsonObject { ["type"] = "string" } },
            new JsonObject { ["name"] = "shapeless", ["inputSchema"] = new JsonObject { ["type"] = "object", ["properties"] = "none" } },
            new JsonObject
            {
                ["name"] = "enormous",
                ["inputSchema"] = new JsonObject
                {
                    ["type"] = "object",
                    ["properties"] = new JsonObject { ["q"] = new JsonObject { ["type"] = "string", ["description"] = new string('d', 20_000) } },
                },
            },
            Tool("verbose", new string('v', 5_000)),
            new JsonObject { ["name"] = "bare" }, // no inputSchema: taken as an object without properties
        ], null),
        _ => Page([Tool("echo")], null),
    };

    /// <summary>The tool <c>whoami</c> of mode <c>token</c>: its description and its schema repeat the request's headers.</summary>
    private static JsonObject TokenTool(string authorization, string apiKey) => new()
    {
        ["name"] = "whoami",
        ["description"] = $"Says who the caller is. Send the header Authorization: {authorization}",
        ["inputSchema"] = new JsonObject
        {
            ["type"] = "object",
            ["properties"] = new JsonObject { ["key"] = new JsonObject { ["type"] = "string", ["description"] = $"An API key, e.g. {apiKey}" } },
        },
    };

    private static JsonObject Tool(string name, string? description = null) => new()
    {
        ["name"] = name,
        ["description"] = description ?? "The tool " + name,
        ["inputSchema"] = new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["text"] = new JsonObject { ["type"] = "string" } } },
    };

    private static JsonObject Page(IEnumerable<JsonNode?> tools, string? nextCursor)
    {
        var page = new JsonObject { ["tools"] = new JsonArray([.. tools]) };
        if (nextCursor is not null)
        {
            page["nextCursor"] = nextCursor;
        }

        return page;
    }

    private static JsonObject Result(JsonNode id, JsonObject result) => new() { ["jsonrpc"] = "2.0", ["id"] = id, ["result"] = result };

    private static JsonObject Error(JsonNode id, int code, string message)
        => new() { ["jsonrpc"] = "2.0", ["id"] = id, ["error"] = new JsonObject { ["code"] = code, ["message"] = message } };
}
