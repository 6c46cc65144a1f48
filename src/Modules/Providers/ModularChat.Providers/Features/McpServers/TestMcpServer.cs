using System.Diagnostics;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Features.Providers;
using ModularChat.Providers.Mcp;

namespace ModularChat.Providers.Features.McpServers;

/// <summary>The server's self-description from the handshake.</summary>
public sealed record McpServerInfo(string Name, string? Version, string? Title);

/// <summary>The outcome of an MCP server test: it always answers 200; <see cref="Success"/> tells whether the server did.</summary>
/// <param name="Error">Why it failed: a clear sentence (refused, not found, no answer within the timeout, not MCP), free of secrets.</param>
/// <param name="Warnings">What of the server's tool list was left out, and why (an unusable entry, too many tools, ...).</param>
public sealed record McpTestResult(
    bool Success, string Transport, double LatencyMs, string? ProtocolVersion, McpServerInfo? Server, IReadOnlyList<McpToolResponse> Tools, string? Error,
    IReadOnlyList<string> Warnings);

internal sealed record TestMcpServer(Guid Id) : ICommand<McpTestResult>;

internal sealed partial class TestMcpServerHandler(
    TenantSessions sessions, McpConnector connector, ProvidersMetrics metrics, IOptions<McpOptions> options, TimeProvider clock,
    ILogger<TestMcpServerHandler> logger)
    : ICommandHandler<TestMcpServer, McpTestResult>
{
    public async ValueTask<McpTestResult> Handle(TestMcpServer command, CancellationToken cancellationToken)
    {
        await using var session = sessions.Write();
        var server = await session.LoadAsync<McpServerConnection>(command.Id, cancellationToken) ?? throw new NotFoundException("MCP server", command.Id);
        using var activity = ModularChatTelemetry.ActivitySource.StartActivity("mcp test");
        activity?.SetTag("mcp.transport", server.Transport);
        var timeout = options.Value.ConnectTimeout;
        var started = Stopwatch.GetTimestamp();
        try
        {
            // One deadline for the handshake and the listing together: the test answers within Mcp:ConnectTimeout, as it says.
            using var deadline = new ClockDeadline(timeout, clock, cancellationToken);
            await using var client = await connector.ConnectAsync(server, deadline.Token);
            var listing = await McpToolCatalog.ListAsync(client, options.Value, connector.SecretValues(server), deadline.Token);
            var latency = Stopwatch.GetElapsedTime(started);

            server.Tools = [.. listing.Tools];
            server.ToolsRefreshedAt = clock.GetUtcNow();
            server.ListingFailedAt = null;
            server.ProtocolVersion = client.NegotiatedProtocolVersion;
            var info = client.ServerInfo;
            server.ServerName = info?.Name is null ? null : StorableText.WithoutNul(info.Name);
            server.ServerVersion = info?.Version is null ? null : StorableText.WithoutNul(info.Version);
            // Only over the server as it was read: a change or a deletion made while the test ran is kept.
            session.Update(server);
            var warnings = await ProviderStore.TrySaveUnchangedAsync(session, cancellationToken)
                ? listing.Warnings
                : [.. listing.Warnings, "The server was changed or deleted while it was being tested: what the test found was not stored. Test it again."];

            metrics.McpTest(server.Transport, ok: true, latency);
            LogTested(logger, server.Name, server.Transport, "succeeded", latency.TotalMilliseconds, server.Tools.Count);
            return new McpTestResult(true, server.Transport, latency.TotalMilliseconds, client.NegotiatedProtocolVersion,
                info is null ? null : new McpServerInfo(info.Name, info.Version, info.Title),
                server.Tools.Select(McpToolResponse.From).ToList(), null, warnings);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested && e is not ConflictException)
        {
            var latency = Stopwatch.GetElapsedTime(started);
            var error = McpConnector.Describe(e, server, timeout, connector.SecretValuesToScrub(server));
            metrics.McpTest(server.Transport, ok: false, latency);
            activity?.SetStatus(ActivityStatusCode.Error, "failed");
            LogTested(logger, server.Name, server.Transport, "failed", latency.TotalMilliseconds, 0);
            return new McpTestResult(false, server.Transport, latency.TotalMilliseconds, null, null, [], error, []);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "MCP server test of {Server} over {Transport} {Outcome} in {LatencyMs:0} ms ({ToolCount} tools)")]
    private static partial void LogTested(ILogger logger, string server, string transport, string outcome, double latencyMs, int toolCount);
}

internal static class TestMcpServerEndpoint
{
    public static void MapTestMcpServer(this IEndpointRouteBuilder group) =>
        group.MapPost("/{id}/test", async Task<Ok<McpTestResult>> (Guid id, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new TestMcpServer(id), ct)))
            .WithName("TestMcpServer")
            .WithSummary("Connect, perform the MCP handshake and list the tools")
            .WithDescription("Reports protocol version, server name, tools and latency, or a clear error within Mcp:ConnectTimeout. Refreshes the cached tool list. Tools a model cannot be offered (no name, no object schema, too large, beyond Mcp:MaxToolsPerServer) are left out, each with a warning.")
            .ProducesProblem(StatusCodes.Status404NotFound);
}
