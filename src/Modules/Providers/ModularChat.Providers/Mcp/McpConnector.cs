using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using ModelContextProtocol;
using ModelContextProtocol.Client;
using ModelContextProtocol.Protocol;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Security;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Features.McpServers;
using ModularChat.Providers.Network;
using ModularChat.Providers.Secrets;
using ModularChat.BuildingBlocks.Validation;

namespace ModularChat.Providers.Mcp;

/// <summary>Connecting to an MCP server failed; the message is clear, bounded and free of secrets.</summary>
internal sealed class McpConnectException(string message) : Exception(message);

/// <summary>
/// Opens MCP client sessions to a tenant's servers: stdio only for allowlisted commands (and with a minimal
/// environment, never this service's own; what the program writes is bounded by
/// <see cref="OutboundNetworkOptions.MaxResponseBytes"/> as HTTP answers are), HTTP transports through the SSRF-guarded
/// client, every handshake bounded by <see cref="McpOptions.ConnectTimeout"/>. The SDK's own logging is off: its
/// messages can carry headers.
/// </summary>
internal sealed class McpConnector(
    OutboundNetwork network, SecretBox secrets, McpStdioProcesses processes, IOptionsMonitor<McpOptions> options,
    IOptionsMonitor<OutboundNetworkOptions> networkOptions, TimeProvider clock)
{
    /// <summary>
    /// Connects and completes the MCP handshake, within <see cref="McpOptions.ConnectTimeout"/> on the host's clock. A caller that goes on
    /// with the connection under the same bound (a test, a listing) passes its own deadline as
    /// <paramref name="cancellationToken"/>: then its end is not told apart here, it ends the call as it is.
    /// </summary>
    /// <exception cref="McpConnectException">The server could not be reached, refused, or did not answer in time.</exception>
    public async Task<McpClient> ConnectAsync(McpServerConnection server, CancellationToken cancellationToken)
    {
        var settings = options.CurrentValue;
        var secretValues = SecretValues(server);
        using var deadline = new ClockDeadline(settings.ConnectTimeout, clock, cancellationToken);
        try
        {
            var transport = Transport(server, settings, secretValues);
            return await McpClient.CreateAsync(transport, new McpClientOptions
            {
                ClientInfo = new Implementation { Name = "ModularChat", Version = "1.0" },
                InitializationTimeout = settings.ConnectTimeout,
                DiscoverProbeTimeout = settings.DiscoverProbeTimeout,
            }, NullLoggerFactory.Instance, deadline.Token);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new McpConnectException(Describe(e, server, settings.ConnectTimeout, secretValues));
        }
    }

    /// <summary>
    /// The decrypted secret values of <paramref name="server"/>, to scrub them from what it answers and from error texts
    /// about it (results, errors, tool lists, logs): each value, and the credentials a <c>scheme credentials</c> value carries
    /// (the token of <c>Authorization: Bearer TOKEN</c>), which a server repeats without the scheme.
    /// </summary>
    /// <exception cref="ConflictException">A secret cannot be decrypted.</exception>
    public IReadOnlyList<string> SecretValues(McpServerConnection server)
        => Redaction.WithCredentialParts(server.AllSecrets().Select(s => secrets.Unprotect(server.TenantId, s.Cipher, "MCP secret")).ToList());

    /// <summary>
    /// The secret values of <paramref name="server"/> to scrub from an error text about it: none when they cannot be
    /// decrypted (then they were never sent either).
    /// </summary>
    public IReadOnlyList<string> SecretValuesToScrub(McpServerConnection server)
    {
        try
        {
            return SecretValues(server);
        }
        catch (ConflictException)
        {
            return [];
        }
    }

    private IClientTransport Transport(McpServerConnection server, McpOptions settings, IReadOnlyList<string> secretValues)
    {
        if (server.Transport == McpTransports.Stdio)
        {
            if (!settings.Stdio.Enabled)
            {
                throw new McpConnectException("The stdio transport is disabled on this server (Mcp:Stdio:Enabled).");
            }

            if (server.Command is null || !settings.Stdio.AllowedCommands.Contains(server.Command, StringComparer.Ordinal))
            {
                throw new McpConnectException($"The command '{server.Command}' is not on this server's allowlist (Mcp:Stdio:AllowedCommands).");
            }

            // Refused when stored since; a server stored before keeps its settings but does not run with them.
            switch (McpServerRules.FirstRefused(server.Environment.Keys.Concat(server.SecretEnvironment.Keys), settings.Stdio.AllowedEnvironment))
            {
                case ({ } loader, true):
                    throw new McpConnectException($"The environment variable {loader} is not allowed for stdio programs: it changes which code the program loads or which programs it runs. Remove it (PUT /api/mcp-servers/{{id}}).");
                case ({ } notAllowed, false):
                    throw new McpConnectException($"The environment variable {notAllowed} is not one stdio programs may be given here (Mcp:Stdio:AllowedEnvironment). Remove it (PUT /api/mcp-servers/{{id}}).");
            }

            // A minimal environment (PATH, HOME, ...) plus the server's own variables: never this service's configuration and keys.
            var environment = StdioClientTransportOptions.GetDefaultEnvironmentVariables();
            foreach (var (name, value) in server.Environment)
            {
                environment[name] = value;
            }

            foreach (var (name, secret) in server.SecretEnvironment)
            {
                environment[name] = secrets.Unprotect(server.TenantId, secret.Cipher, "MCP secret");
            }

            // Not the SDK's StdioClientTransport: it reads a line of any length (see McpStdioTransport).
            return new McpStdioTransport(processes, server.Name, server.Command, server.Arguments, environment, networkOptions.CurrentValue.MaxResponseBytes, secretValues);
        }

        var headers = new Dictionary<string, string>(server.Headers, StringComparer.OrdinalIgnoreCase);
        foreach (var (name, secret) in server.SecretHeaders)
        {
            headers[name] = secrets.Unprotect(server.TenantId, secret.Cipher, "MCP secret header");
        }

        if (network.Check(server.Url, "url", out var url) is { } problem)
        {
            throw new McpConnectException(problem);
        }

        return new HttpClientTransport(new HttpClientTransportOptions
        {
            Name = server.Name,
            Endpoint = url!,
            TransportMode = server.Transport == McpTransports.Sse ? HttpTransportMode.Sse : HttpTransportMode.StreamableHttp,
            AdditionalHeaders = headers,
            ConnectionTimeout = settings.ConnectTimeout,
        }, network.ClientFor(url!), NullLoggerFactory.Instance, ownsHttpClient: true);
    }

    /// <summary>A clear, secret-free sentence for what went wrong.</summary>
    public static string Describe(Exception error, McpServerConnection server, TimeSpan timeout, IEnumerable<string> secretValues)
    {
        var where = server.Transport == McpTransports.Stdio ? $"the program '{server.Command}'" : $"{server.Url}";
        var message = error switch
        {
            McpConnectException known => known.Message,
            _ when Inner<McpStdioException>(error) is { } stdio => stdio.Message,
            McpListException listing => $"{where} did not list its tools: {listing.Message}",
            OperationCanceledException or TimeoutException => $"No answer from {where} within {timeout.TotalSeconds:0.#} s (Mcp:ConnectTimeout).",
            _ when Inner<OutboundRefusedException>(error) is { } rule => $"Could not connect to {where}: {rule.Message}",
            _ when Inner<SocketException>(error) is { } socket => socket.SocketErrorCode switch
            {
                SocketError.ConnectionRefused => $"The connection to {where} was refused: nothing is listening there.",
                SocketError.HostNotFound or SocketError.NoData => $"The host of {where} was not found.",
                SocketError.TimedOut => $"Connecting to {where} timed out.",
                _ => $"Could not connect to {where}: {socket.SocketErrorCode}.",
            },
            _ when Inner<HttpRequestException>(error) is { StatusCode: { } status } => $"{where} answered HTTP {(int)status} ({status}) instead of speaking MCP.",
            _ when Inner<HttpRequestException>(error) is { } http => $"Could not connect to {where}: {http.Message}",
            McpException mcp => $"{where} failed the MCP handshake: {ServerWords(mcp)}",
            _ => $"Could not connect to {where}: {Innermost(error).Message}",
        };
        message = Redaction.Scrub(message, secretValues);
        return message.Length > 1000 ? StorableText.Prefix(message, 1000) + "..." : message;
    }

    /// <summary>
    /// A clear, secret-free sentence for a tool call that failed below the protocol: the connection could not be made or
    /// was lost, the program ended, the answer was too large (a JSON-RPC error answer is the server's own and said as such).
    /// </summary>
    public static string DescribeCallFailure(Exception error, McpServerConnection server, IEnumerable<string> secretValues)
    {
        var where = server.Transport == McpTransports.Stdio ? $"the program '{server.Command}'" : $"{server.Url}";
        var message = error switch
        {
            McpConnectException known => known.Message,
            ConflictException conflict => conflict.Message, // its secrets cannot be decrypted
            _ when Inner<McpStdioException>(error) is { } stdio => stdio.Message,
            ClientTransportClosedException { Details.Exception: { } closed } when Inner<McpStdioException>(closed) is { } stdio => stdio.Message,
            // The MCP specification's answer to a session id the server does not know: it restarted, or ended the session.
            _ when Inner<HttpRequestException>(error) is { StatusCode: System.Net.HttpStatusCode.NotFound } =>
                $"{where} no longer knows this session (HTTP 404: it restarted or ended the session).",
            _ when Inner<HttpRequestException>(error) is { StatusCode: { } status } => $"{where} answered HTTP {(int)status} ({status}).",
            _ when Inner<HttpRequestException>(error) is { } http => $"The request to {where} failed: {http.Message}",
            _ when Inner<IOException>(error) is { } io => $"The connection to {where} was lost: {io.Message}",
            _ => $"{where} failed: {Innermost(error).Message}",
        };
        message = Redaction.Scrub(message, secretValues);
        return message.Length > 1000 ? StorableText.Prefix(message, 1000) + "..." : message;
    }

    /// <summary>The MCP client's words before a server's own JSON-RPC error message, which say nothing to a reader of it.</summary>
    private const string RemoteErrorPrefix = "Request failed (remote): ";

    /// <summary>What the server said in <paramref name="error"/>: its JSON-RPC error message, without the MCP client's prefix.</summary>
    public static string ServerWords(McpException error)
        => error.Message.StartsWith(RemoteErrorPrefix, StringComparison.Ordinal) ? error.Message[RemoteErrorPrefix.Length..] : error.Message;

    /// <summary>
    /// <paramref name="text"/>, a sentence about <paramref name="server"/>, as the model is told it: the server named by its
    /// configured name, not by its URL (host and port) or its program's command, which are the tenant's settings and say
    /// nothing the model can act on.
    /// </summary>
    public static string ForModel(string text, McpServerConnection server)
    {
        var named = $"MCP server '{server.Name}'";
        var places = new List<string>();
        if (server.Transport == McpTransports.Stdio)
        {
            places.Add($"the program '{server.Command}'");
            places.Add(server.Command ?? "");
        }
        else if (Uri.TryCreate(server.Url, UriKind.Absolute, out var url))
        {
            places.AddRange([server.Url!, url.ToString(), url.GetLeftPart(UriPartial.Path), url.Authority, url.Host]);
        }

        foreach (var place in places.Where(p => p.Length >= 4).Distinct(StringComparer.Ordinal).OrderByDescending(p => p.Length))
        {
            text = text.Replace(place, named, StringComparison.Ordinal);
        }

        return text;
    }

    private static T? Inner<T>(Exception? e)
        where T : Exception
    {
        for (; e is not null; e = e.InnerException)
        {
            if (e is T t)
            {
                return t;
            }
        }

        return null;
    }

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null)
        {
            e = e.InnerException;
        }

        return e;
    }
}
