using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using HttpJsonOptions = Microsoft.AspNetCore.Http.Json.JsonOptions;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Tenancy;
using ModularChat.Providers.Clients;
using ModularChat.Providers.Mcp;

namespace ModularChat.Providers.Features.Chat;

internal static class ChatEndpoint
{
    public static void MapChat(this IEndpointRouteBuilder group) =>
        group.MapPost("/{id}/chat", async Task<Results<Ok<ChatTurnResponse>, ProblemHttpResult, EmptyHttpResult>> (
                Guid id, ChatRequest body, HttpContext http, ChatTurns turns, TenantContext tenant, ChatShutdown shutdown, CancellationToken ct) =>
            {
                var streamed = http.Request.GetTypedHeaders().Accept.Any(a => a.MediaType.Equals("text/event-stream", StringComparison.OrdinalIgnoreCase));
                await using var turn = await turns.BeginAsync(tenant.TenantId, id, body, streamed, ct);
                using var running = CancellationTokenSource.CreateLinkedTokenSource(ct, shutdown.Token);
                try
                {
                    if (!streamed)
                    {
                        return TypedResults.Ok(await turn.RunAsync(running.Token));
                    }

                    await StreamAsync(http, turn, shutdown, running.Token);
                    return TypedResults.Empty;
                }
                catch (ModelCallException failure)
                {
                    return Problem(failure, http);
                }
                catch (OperationCanceledException e) when (shutdown.Stopped(e, http.RequestAborted))
                {
                    http.Response.Headers.RetryAfter = ProblemDetailsExceptionHandler.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
                    return TypedResults.Problem(ShuttingDown(http));
                }
            })
            .WithName("Chat")
            .WithSummary("Send the user's message and get the model's answer")
            .WithDescription(
                "Appends the user's message, assembles the context (summary + recent messages within the model's budget), calls the tenant's " +
                "provider with its MCP tools, appends tool calls, tool results and the answer, and returns the answer. With 'Accept: text/event-stream' " +
                "the answer streams as server-sent events (delta, tool-call, tool-result, then done with this response, or error); a client that " +
                "disconnects cancels the model call. Provider failures answer 502/504 and store nothing but the user's message, and so does a turn " +
                "still running after Chat:TurnTimeout (504); without a provider, 409.")
            .Produces<ChatTurnResponse>(StatusCodes.Status200OK, "application/json", "text/event-stream")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity)
            .ProducesProblem(StatusCodes.Status502BadGateway)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable)
            .ProducesProblem(StatusCodes.Status504GatewayTimeout);

    /// <summary>
    /// Streams the turn as server-sent events. Nothing is sent before the model's first update, so a provider that
    /// fails at once still gets a plain 502/504 ProblemDetails; after that, a failure is an <c>error</c> event.
    /// </summary>
    private static async Task StreamAsync(HttpContext http, ChatTurns.ChatTurn turn, ChatShutdown shutdown, CancellationToken ct)
    {
        var json = http.RequestServices.GetRequiredService<IOptions<HttpJsonOptions>>().Value.SerializerOptions;
        var updates = new List<ChatResponseUpdate>();
        // Why the latest call of each id is not run (null: it is) and whether it is stored, for its result: a result carries
        // only its call's id.
        var calls = new Dictionary<string, (string? NotRun, bool Stored)>(StringComparer.Ordinal);
        var rounds = new AnswerRounds();
        var started = false;
        try
        {
            await foreach (var update in turn.StreamAsync(ct))
            {
                updates.Add(update);
                if (!started)
                {
                    await StartAsync(http);
                    started = true;
                }

                foreach (var content in update.Contents)
                {
                    switch (content)
                    {
                        case TextContent { Text.Length: > 0 } text when update.Role != ChatRole.Tool:
                            // Every round's text is the answer's, one round's from the next's apart as the answer has them.
                            if (rounds.Before(text.Text) is { } separator)
                            {
                                await WriteAsync(http, "delta", new { text = separator }, json, ct);
                            }

                            await WriteAsync(http, "delta", new { text = text.Text }, json, ct);
                            break;
                        case FunctionCallContent call:
                            // A call that is not run says so, and why, as the stored turn does (a failed call with that
                            // result, or, beyond Chat:MaxToolCalls or in the last round, no call at all: stored false).
                            var origin = turn.ToolOrigins.GetValueOrDefault(call.Name) ?? new ToolOrigin("", call.Name);
                            var (why, stored) = calls[call.CallId] = (turn.NotRun(call), turn.Stored(call));
                            await WriteAsync(http, "tool-call", new
                            {
                                callId = call.CallId, server = origin.Server, tool = origin.Tool, arguments = call.Arguments,
                                run = why is null, notRunReason = why, stored,
                            }, json, ct);
                            break;
                        case FunctionResultContent toolResult:
                            rounds.RoundEnded();
                            var called = calls.GetValueOrDefault(toolResult.CallId, (null, true));
                            await WriteAsync(http, "tool-result", new
                            {
                                callId = toolResult.CallId,
                                failed = called.NotRun is not null || toolResult.Exception is not null || turn.ToolFailed(toolResult.CallId),
                                run = called.NotRun is null, notRunReason = called.NotRun, stored = called.Stored,
                            }, json, ct);
                            break;
                    }
                }

                await http.Response.Body.FlushAsync(ct);
            }
        }
        catch (ModelCallException failure) when (started)
        {
            await WriteAsync(http, "error", ProblemFor(failure, http), json, CancellationToken.None);
            return;
        }
        catch (OperationCanceledException e) when (started && shutdown.Stopped(e, http.RequestAborted))
        {
            await WriteAsync(http, "error", ShuttingDown(http), json, CancellationToken.None);
            await http.Response.Body.FlushAsync(CancellationToken.None);
            return;
        }

        var response = updates.ToChatResponse();
        ChatTurnResponse result;
        try
        {
            result = await turn.CompleteAsync(response.Messages, response.Usage, ct);
        }
        catch (Exception e) when (started && !http.RequestAborted.IsCancellationRequested)
        {
            // The answer streamed, but storing it failed (the conversation deleted meanwhile, the database unreachable): the
            // client gets an error event it can act on, not a stream cut short; the exception is logged as the handler would.
            var problem = ProblemDetailsExceptionHandler.Map(e);
            problem.Instance = http.Request.Path;
            // As the other error events and every ProblemDetails answered over HTTP: a type, and the traceId to quote.
            problem.Type ??= ProblemJsonFallbackWriter.TypeFor(problem.Status ?? StatusCodes.Status500InternalServerError);
            problem.Extensions["traceId"] = System.Diagnostics.Activity.Current?.TraceId.ToString() ?? http.TraceIdentifier;
            http.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(ChatEndpoint))
                .Log(problem.Status >= 500 ? LogLevel.Error : LogLevel.Information, e, "A streamed chat turn's answer could not be stored ({Status})", problem.Status);
            await WriteAsync(http, "error", problem, json, CancellationToken.None);
            return;
        }

        if (!started)
        {
            await StartAsync(http);
        }

        await WriteAsync(http, "done", result, json, CancellationToken.None);
        await http.Response.Body.FlushAsync(CancellationToken.None);
    }

    private static Task StartAsync(HttpContext http)
    {
        http.Response.StatusCode = StatusCodes.Status200OK;
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        http.Response.Headers["X-Accel-Buffering"] = "no"; // reverse proxies must not buffer the stream
        return http.Response.StartAsync(http.RequestAborted);
    }

    private static async Task WriteAsync<T>(HttpContext http, string name, T data, JsonSerializerOptions json, CancellationToken ct)
    {
        await http.Response.WriteAsync($"event: {name}\ndata: {JsonSerializer.Serialize(data, json)}\n\n", ct);
    }

    /// <summary>The answer of a turn the node stopped before its model answered (see <see cref="ChatShutdown"/>).</summary>
    private static ProblemDetails ShuttingDown(HttpContext http) => new()
    {
        Status = StatusCodes.Status503ServiceUnavailable,
        Title = "The service is shutting down.",
        Detail = "This node stopped before the model answered. The message is stored: send the turn again with the same externalId " +
            "(another node answers it) or as a new turn.",
        Instance = http.Request.Path,
        Type = "https://tools.ietf.org/html/rfc9110#section-15.6.4",
        Extensions = { ["traceId"] = System.Diagnostics.Activity.Current?.TraceId.ToString() ?? http.TraceIdentifier },
    };

    private static ProblemHttpResult Problem(ModelCallException failure, HttpContext http)
    {
        var problem = ProblemFor(failure, http);
        return TypedResults.Problem(problem);
    }

    private static ProblemDetails ProblemFor(ModelCallException failure, HttpContext http)
    {
        var problem = new ProblemDetails
        {
            Status = failure.Status,
            Title = failure.Title,
            Detail = failure.Message,
            Instance = http.Request.Path,
            Type = failure.Status == StatusCodes.Status504GatewayTimeout
                ? "https://tools.ietf.org/html/rfc9110#section-15.6.5"
                : "https://tools.ietf.org/html/rfc9110#section-15.6.3",
        };
        if (failure.ProviderStatus is { } status)
        {
            problem.Extensions["providerStatus"] = status;
        }

        problem.Extensions["traceId"] = System.Diagnostics.Activity.Current?.TraceId.ToString() ?? http.TraceIdentifier;
        return problem;
    }
}
