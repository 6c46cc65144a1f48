using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Marten;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using ModelContextProtocol;
using ModelContextProtocol.Client;
using ModelContextProtocol.Protocol;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Security;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Features.Chat;
using ModularChat.Providers.Features.Providers;
using ModularChat.BuildingBlocks.Validation;

namespace ModularChat.Providers.Mcp;

/// <summary>Where a tool offered to the model comes from.</summary>
internal sealed record ToolOrigin(string Server, string Tool);

/// <summary>A tool call under way: the tool, and the MCP server it was sent to (by name and id).</summary>
internal sealed record ToolCallInFlight(string Tool, string Server, Guid ServerId);

/// <summary>
/// The MCP tools of one chat turn. The model sees each server's cached tool list (refreshed by a test); a server is
/// connected only when the model calls one of its tools, once per turn, and every connection ends with the turn. A
/// connection that ends during the turn (a stdio program that died, a session the server closed or forgot) is made again
/// once, at the next call of one of its tools; one that ends again is not, until the next turn. So is one whose call
/// failed below the protocol (the connection dropped mid-request, HTTP 404 for a session the server no longer knows):
/// that call fails (a tool call may not be repeated safely), and the next one opens a new session rather than sending
/// the old session's id again.
/// </summary>
internal sealed partial class McpToolSession : IAsyncDisposable
{
    private readonly McpConnector _connector;
    private readonly ProvidersMetrics _metrics;
    private readonly McpOptions _options;
    private readonly int _maxResultLength;
    private readonly Dictionary<Guid, Task<McpClient>> _clients = [];
    private readonly Lock _gate = new();
    private readonly List<AITool> _tools = [];
    private readonly Dictionary<string, ToolOrigin> _origins = new(StringComparer.Ordinal);
    private readonly CallMarks _failed = new();
    private readonly Dictionary<Guid, int> _lost = [];
    private readonly ILogger _logger;
    private readonly TimeProvider _clock;
    private volatile ToolCallInFlight? _inFlight;

    private McpToolSession(McpConnector connector, ProvidersMetrics metrics, McpOptions options, int maxResultLength, TimeProvider clock, ILogger logger)
    {
        _logger = logger;
        _clock = clock;
        _connector = connector;
        _metrics = metrics;
        _options = options;
        _maxResultLength = maxResultLength;
    }

    public IReadOnlyList<AITool> Tools => _tools;

    public IReadOnlyDictionary<string, ToolOrigin> Origins => _origins;

    /// <summary>
    /// The tool call running now, null while none runs. A call that the turn's cancellation cut short (its deadline, the
    /// client leaving) stays here, so that the turn can say what it was waiting for when it ended.
    /// </summary>
    public ToolCallInFlight? InFlight => _inFlight;

    /// <summary>
    /// Whether <paramref name="call"/> failed although it answered the model: the tool reported an error (a result marked
    /// isError, or a JSON-RPC error) or did not answer in time. A call that threw is marked by its result's exception.
    /// </summary>
    public bool Failed(FunctionCallContent call) => _failed.Contains(call);

    /// <summary>Whether the latest call with <paramref name="callId"/> failed that way (for a result streamed as it comes).</summary>
    public bool LatestFailed(string callId) => _failed.Latest(callId);

    /// <summary>
    /// What the model is told when it calls <paramref name="call"/>, a tool it was not offered (a name of its own making, or
    /// of another turn's tools); the call is marked failed, as a tool that reported an error is.
    /// </summary>
    public string NotOffered(FunctionCallContent call)
    {
        Record(call, ok: false);
        return NotOfferedSentence(call);
    }

    /// <summary>What <see cref="NotOffered"/> tells the model, without marking the call.</summary>
    public static string NotOfferedSentence(FunctionCallContent call)
        => $"The tool '{Shown(call.Name)}' is not one of the tools offered in this conversation, so nothing was called. Call only the tools offered.";

    /// <summary>
    /// What the model is told when it calls <paramref name="call"/> with arguments that are not JSON: nothing was called (the
    /// client would have called the tool without any), and the call is marked failed.
    /// </summary>
    public string ArgumentsNotJson(FunctionCallContent call)
    {
        Record(call, ok: false);
        return ArgumentsNotJsonSentence(call);
    }

    /// <summary>What <see cref="ArgumentsNotJson"/> tells the model, without marking the call.</summary>
    public static string ArgumentsNotJsonSentence(FunctionCallContent call)
        => $"The arguments of this call of the tool '{Shown(call.Name)}' are not a valid JSON object, so the tool was not called. " +
            "Call it again with its arguments as a JSON object.";

    /// <summary>A name of the model's making, as a sentence to it quotes it: bounded and without control characters.</summary>
    private static string Shown(string name)
    {
        name = name.Length > McpToolCatalog.MaxNameLength ? StorableText.Prefix(name, McpToolCatalog.MaxNameLength) + "..." : name;
        return string.Concat(name.Select(c => char.IsControl(c) ? '?' : c));
    }

    private void Record(FunctionCallContent call, bool ok) => _failed.Set(call, !ok);

    /// <summary>
    /// The tools of <paramref name="servers"/>. The servers that were never listed are listed now, all at once and
    /// under one deadline, <see cref="McpOptions.ConnectTimeout"/> from now, for the handshake and the listing together
    /// (a turn waits for the slowest, not for their sum), and their lists stored; one that cannot be reached is left out
    /// of the turn rather than failing it. Its deadlines, and its tool calls', run on <paramref name="clock"/>, the turn's.
    /// </summary>
    public static async Task<McpToolSession> OpenAsync(
        IReadOnlyList<McpServerConnection> servers, McpConnector connector, IDocumentStore store, ProvidersMetrics metrics,
        McpOptions options, int maxResultLength, TimeProvider clock, ILogger logger, CancellationToken cancellationToken)
    {
        var session = new McpToolSession(connector, metrics, options, maxResultLength, clock, logger);
        try
        {
            using var deadline = new ClockDeadline(options.ConnectTimeout, clock, cancellationToken);
            var lists = await Task.WhenAll(servers.Select(server => server switch
            {
                { Tools: { } known } => Task.FromResult<List<McpToolInfo>?>(known),
                { ListingFailedAt: { } failed } when clock.GetUtcNow() < failed + options.UnreachableRetryAfter
                    => LeftOutUntil(logger, server, failed + options.UnreachableRetryAfter),
                // On the thread pool: what a connection does before its first wait (starting a program, decrypting its
                // secrets) does not hold up the next server's.
                _ => Task.Run(() => session.ListAsync(server, store, logger, deadline.Token, cancellationToken), CancellationToken.None),
            }));
            session.Offer(servers, lists, options, logger);
            return session;
        }
        catch
        {
            await session.DisposeAsync(); // the turn was cancelled: the connections made so far end here, not never
            throw;
        }
    }

    /// <summary>
    /// What the model is offered: the servers' tools in order, each under a name unique in the turn, at most
    /// <see cref="McpOptions.MaxToolsPerTurn"/>; as a stored list is read (<see cref="McpToolCatalog.Readable"/>): their
    /// descriptions and schemas without the server's secrets, a tool whose name holds one left out (a list stored before
    /// lists were stored without them still holds them).
    /// </summary>
    private void Offer(IReadOnlyList<McpServerConnection> servers, List<McpToolInfo>?[] lists, McpOptions options, ILogger logger)
    {
        for (var i = 0; i < servers.Count; i++)
        {
            var (server, tools) = (servers[i], lists[i]);
            if (tools is null)
            {
                continue;
            }

            foreach (var tool in McpToolCatalog.Readable(server, tools, _connector.SecretValuesToScrub(server), logger))
            {
                if (_tools.Count >= options.MaxToolsPerTurn)
                {
                    LogToolsLeftOut(logger, options.MaxToolsPerTurn, server.Name);
                    return;
                }

                var exposed = ExposedName(tool.Name);
                if (_origins.ContainsKey(exposed))
                {
                    exposed = ExposedName(server.Name + "_" + tool.Name);
                }

                if (_origins.TryAdd(exposed, new ToolOrigin(server.Name, tool.Name)))
                {
                    _tools.Add(new McpToolFunction(this, server, tool, exposed));
                }
            }
        }
    }

    private static Task<List<McpToolInfo>?> LeftOutUntil(ILogger logger, McpServerConnection server, DateTimeOffset retryAt)
    {
        LogServerSkipped(logger, server.Name, $"its tools could not be listed lately; turns try again from {retryAt:u} (Mcp:UnreachableRetryAfter), a test at once");
        return Task.FromResult<List<McpToolInfo>?>(null);
    }

    /// <summary>
    /// Lists a server that was never listed, by <paramref name="deadline"/>, and stores its list; null (logged, and the
    /// failure stored so that the next turns do not wait for it again) when it cannot be reached. The connection is kept
    /// for the turn's tool calls only when the listing succeeded: else it ends at once (a stdio program is killed), not
    /// with the turn, which may go on waiting for its model for minutes.
    /// </summary>
    private async Task<List<McpToolInfo>?> ListAsync(
        McpServerConnection server, IDocumentStore store, ILogger logger, CancellationToken deadline,
        CancellationToken cancellationToken)
    {
        McpClient? client = null;
        try
        {
            client = await _connector.ConnectAsync(server, deadline);
            var listing = await McpToolCatalog.ListAsync(client, _options, _connector.SecretValues(server), deadline);
            lock (_gate)
            {
                _clients[server.Id] = Task.FromResult(client);
            }

            client = null;
            foreach (var warning in listing.Warnings)
            {
                LogToolListWarning(logger, server.Name, warning);
            }

            server.Tools = [.. listing.Tools];
            server.ToolsRefreshedAt = _clock.GetUtcNow();
            await SaveIfUnchangedAsync(server, store, cancellationToken); // if it changed meanwhile, the next turn lists it again
            return server.Tools;
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            await AbandonAsync(client);
            // The secrets too: a server's error may repeat what it was sent (the connect step scrubs them the same way).
            LogServerSkipped(logger, server.Name, McpConnector.Describe(e, server, _options.ConnectTimeout, _connector.SecretValuesToScrub(server)));
            server.ListingFailedAt = _clock.GetUtcNow();
            await SaveIfUnchangedAsync(server, store, cancellationToken);
            return null;
        }
        catch
        {
            await AbandonAsync(client);
            throw;
        }
    }

    private static async Task AbandonAsync(McpClient? client)
    {
        try
        {
            if (client is not null)
            {
                await client.DisposeAsync();
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or InvalidOperationException)
        {
            // It is gone already.
        }
    }

    /// <summary>Stores what a turn learnt of <paramref name="server"/>, never over a change or a deletion made meanwhile.</summary>
    private static async Task SaveIfUnchangedAsync(McpServerConnection server, IDocumentStore store, CancellationToken cancellationToken)
    {
        await using var write = store.LightweightSession(server.TenantId);
        write.Update(server);
        await ProviderStore.TrySaveUnchangedAsync(write, cancellationToken);
    }

    /// <summary>
    /// The turn's connection to <paramref name="server"/>, made at its first call. A connection that has ended since (its
    /// program died, the server closed the session) is disposed and made again, once per turn: a server that keeps dying is
    /// not started again for every call the model makes.
    /// </summary>
    /// <exception cref="McpConnectException">It could not be reached, or its connection ended again.</exception>
    private async Task<McpClient> ClientAsync(McpServerConnection server, CancellationToken cancellationToken)
    {
        Task<McpClient> client;
        McpClient? ended = null;
        lock (_gate)
        {
            if (_clients.TryGetValue(server.Id, out client!) && client.IsCompletedSuccessfully && client.Result.Completion.IsCompleted)
            {
                ended = Lose(server.Id);
            }

            if (!_clients.TryGetValue(server.Id, out client!) || client.IsFaulted || client.IsCanceled)
            {
                if (_lost.GetValueOrDefault(server.Id) > 1)
                {
                    client = Task.FromException<McpClient>(new McpConnectException(
                        $"The connection to MCP server '{server.Name}' ended twice in this turn; it is not made again before the next turn."));
                }
                else
                {
                    // Not bound to the first caller's token: a later tool call of the same turn may reuse the connection.
                    client = _connector.ConnectAsync(server, CancellationToken.None);
                }

                _clients[server.Id] = client;
            }
        }

        if (ended is not null)
        {
            await AbandonAsync(ended); // a stdio program's process and directory go now, not with the turn
        }

        return await client.WaitAsync(cancellationToken);
    }

    /// <summary>
    /// Drops <paramref name="client"/>, the turn's connection to <paramref name="server"/>, after one of its calls failed
    /// below the protocol: the session is in doubt (a server that restarted answers its id with 404; after a connection
    /// that dropped mid-request, it may have), so the next call makes a new one, as after a connection that ended.
    /// </summary>
    private async Task DropAsync(McpServerConnection server, McpClient client)
    {
        lock (_gate)
        {
            if (!_clients.TryGetValue(server.Id, out var cached) || !cached.IsCompletedSuccessfully || cached.Result != client)
            {
                return; // another call dropped it already
            }

            Lose(server.Id);
        }

        await AbandonAsync(client);
    }

    /// <summary>Forgets the connection to server <paramref name="id"/> (held under the gate) and counts it lost; returns it.</summary>
    private McpClient Lose(Guid id)
    {
        var lost = _clients[id].Result;
        _clients.Remove(id);
        _lost[id] = _lost.GetValueOrDefault(id) + 1;
        return lost;
    }

    /// <summary>OpenAI function names: letters, digits, '_' and '-', at most 64.</summary>
    internal static string ExposedName(string name)
    {
        var safe = UnsafeNameCharacters().Replace(name, "_");
        return safe.Length > 64 ? safe[..64] : safe.Length == 0 ? "tool" : safe;
    }

    public async ValueTask DisposeAsync()
    {
        Task<McpClient>[] clients;
        lock (_gate)
        {
            clients = [.. _clients.Values];
        }

        foreach (var client in clients)
        {
            try
            {
                await (await client).DisposeAsync();
            }
            catch (Exception e) when (e is McpConnectException or ConflictException or OperationCanceledException or IOException or InvalidOperationException)
            {
                // It never connected (its secrets could not even be decrypted: ConflictException), or it is gone already.
            }
        }
    }

    /// <summary>
    /// What the model is told when a call of <paramref name="tool"/> failed below the protocol (the server could not be
    /// reached, the connection was lost, the program died, the answer was too large): a sentence naming the server and what
    /// failed, as for a JSON-RPC error or a timeout, rather than an exception, which the client reports as "Function failed"
    /// and counts towards the errors after which it fails the whole turn (blamed on the model provider). Logged with the
    /// server and the tool; both texts without the server's secrets. The model's names the server by its name only (the
    /// log says where it is).
    /// </summary>
    private string CallFailed(McpServerConnection server, string tool, Exception error)
    {
        var reason = McpConnector.DescribeCallFailure(error, server, _connector.SecretValuesToScrub(server));
        LogToolCallFailed(_logger, server.Name, tool, reason);
        return $"The tool {tool} of MCP server '{server.Name}' could not be called: {McpConnector.ForModel(reason, server)}";
    }

    [GeneratedRegex("[^A-Za-z0-9_-]")]
    private static partial Regex UnsafeNameCharacters();

    [LoggerMessage(Level = LogLevel.Warning, Message = "MCP server {Server}'s tool list: {Warning}")]
    private static partial void LogToolListWarning(ILogger logger, string server, string warning);

    [LoggerMessage(Level = LogLevel.Warning, Message = "This chat turn offers the model {Max} tools (Mcp:MaxToolsPerTurn); the rest, from MCP server {Server} on, are left out")]
    private static partial void LogToolsLeftOut(ILogger logger, int max, string server);

    [LoggerMessage(Level = LogLevel.Warning, Message = "MCP server {Server}'s tool {Tool} could not be called: {Reason}")]
    private static partial void LogToolCallFailed(ILogger logger, string server, string tool, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "MCP server {Server} is left out of this chat turn: {Reason}")]
    private static partial void LogServerSkipped(ILogger logger, string server, string reason);

    /// <summary>One MCP tool as the model sees it; calling it calls the server.</summary>
    private sealed class McpToolFunction(McpToolSession session, McpServerConnection server, McpToolInfo tool, string exposedName) : AIFunction
    {
        private readonly JsonElement _schema = JsonDocument.Parse(tool.InputSchema).RootElement.Clone();

        public override string Name => exposedName;

        public override string Description => tool.Description ?? "";

        public override JsonElement JsonSchema => _schema;

        protected override async ValueTask<object?> InvokeCoreAsync(AIFunctionArguments arguments, CancellationToken cancellationToken)
        {
            using var activity = ModularChatTelemetry.ActivitySource.StartActivity("mcp tool call", ActivityKind.Client);
            activity?.SetTag("mcp.server", server.Name);
            activity?.SetTag("mcp.tool", tool.Name);
            var started = Stopwatch.GetTimestamp();
            var ok = false;
            session._inFlight = new ToolCallInFlight(tool.Name, server.Name, server.Id);
            try
            {
                string text;
                McpClient? client = null;
                try
                {
                    client = await session.ClientAsync(server, cancellationToken);
                    // Mcp:ToolCallTimeout from the call on the turn's clock, after the connection (which has its own bound).
                    using var deadline = new ClockDeadline(session._options.ToolCallTimeout, session._clock, cancellationToken);
                    var result = await client.CallToolAsync(tool.Name, arguments.ToDictionary(a => a.Key, a => a.Value), cancellationToken: deadline.Token);
                    text = string.Join("\n", result.Content.Select(Describe));
                    ok = result.IsError != true;
                    // The server's own words, as with a JSON-RPC error below: free of our secrets and of anything credential-shaped
                    // before they reach the model, the turn's answer and the stored conversation. A result is free of the secrets
                    // this server was given too (a tool that echoes its request's headers, or its environment), but keeps
                    // what is only credential-shaped: that is the tool's answer ('password: str' in code it read).
                    text = ok
                        ? Redaction.ScrubSecrets(text, session._connector.SecretValues(server))
                        : "The tool reported an error: " + Redaction.Scrub(text, session._connector.SecretValues(server));
                }
                catch (McpProtocolException e)
                {
                    // The server's own JSON-RPC error answer: the model gets its words (free of our secrets), as with a result
                    // marked isError, rather than the bare "Function failed" of an exception.
                    text = "The tool reported an error: " + Redaction.Scrub(McpConnector.ServerWords(e), session._connector.SecretValues(server));
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    text = $"The tool {tool.Name} did not answer within {session._options.ToolCallTimeout.TotalSeconds:0.#} s.";
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    text = session.CallFailed(server, tool.Name, e);
                    if (client is not null)
                    {
                        await session.DropAsync(server, client);
                    }
                }

                if (FunctionInvokingChatClient.CurrentContext?.CallContent is { } call)
                {
                    session.Record(call, ok);
                }

                return text.Length > session._maxResultLength ? StorableText.Prefix(text, session._maxResultLength) + " [cut]" : text;
            }
            finally
            {
                if (!cancellationToken.IsCancellationRequested)
                {
                    session._inFlight = null;
                }

                session._metrics.ToolCall(server.Name, tool.Name, ok, Stopwatch.GetElapsedTime(started));
                if (!ok)
                {
                    activity?.SetStatus(ActivityStatusCode.Error);
                }
            }
        }

        private static string Describe(ContentBlock block) => block switch
        {
            TextContentBlock text => text.Text,
            ImageContentBlock image => $"[image {image.MimeType}]",
            AudioContentBlock audio => $"[audio {audio.MimeType}]",
            EmbeddedResourceBlock resource => resource.Resource is TextResourceContents t ? t.Text : $"[resource {resource.Resource.Uri}]",
            ResourceLinkBlock link => $"[resource {link.Uri}]",
            _ => $"[{block.Type}]",
        };
    }
}
