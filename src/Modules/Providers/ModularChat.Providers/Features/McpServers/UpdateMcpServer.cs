using Marten;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Features.Providers;
using ModularChat.Providers.Mcp;
using ModularChat.Providers.Secrets;

namespace ModularChat.Providers.Features.McpServers;

internal sealed record UpdateMcpServer(Guid Id, McpServerRequest Body) : ICommand<McpServerResponse>, IMcpServerCommand;

/// <summary>
/// Replaces an MCP server's settings. Secret values are write-only, so a client cannot send them back: leaving
/// <c>secretHeaders</c> / <c>secretEnvironment</c> out keeps the stored ones (unless the transport changes, which drops
/// them with the rest of the old transport's settings; for another host, program, arguments or plain environment they must be sent again),
/// an object replaces them all (<c>{}</c> removes them).
/// </summary>
internal sealed class UpdateMcpServerHandler(
    TenantSessions sessions, SecretBox secrets, IOptions<McpOptions> options, McpConnector connector, ILogger<UpdateMcpServerHandler> logger)
    : ICommandHandler<UpdateMcpServer, McpServerResponse>
{
    public async ValueTask<McpServerResponse> Handle(UpdateMcpServer command, CancellationToken cancellationToken)
    {
        var body = command.Body;
        var tenant = sessions.TenantId;
        await using var session = sessions.Write();
        // One write of the tenant's servers at a time (a DELETE meanwhile is seen, not undone).
        await ProviderStore.LockTenantAsync(session, ProviderStore.McpServersLock, cancellationToken);
        var all = await session.Query<McpServerConnection>().ToListAsync(cancellationToken);
        var server = all.SingleOrDefault(s => s.Id == command.Id) ?? throw new NotFoundException("MCP server", command.Id);
        var name = body.Name!.Trim();
        if (ProviderSettings.NameTaken(all.Where(s => s.Id != server.Id).Select(s => s.Name), name))
        {
            throw CreateMcpServerHandler.Duplicate(name);
        }

        var before = Connection(server);
        var stdio = body.Transport == McpTransports.Stdio;
        var kept = server.Transport != body.Transport ? null
            : stdio ? (body.SecretEnvironment is null ? server.SecretEnvironment : null)
            : (body.SecretHeaders is null ? server.SecretHeaders : null);
        if (kept is { Count: > 0 })
        {
            EnsureSameServer(server, body, stdio);
        }

        McpServerSettings.Apply(secrets, tenant, body, server, kept);
        var max = options.Value.MaxHeaders;
        if (!stdio && server.Headers.Count + server.SecretHeaders.Count > max)
        {
            throw new LimitExceededException("headers", $"'headers' may have at most {max} entries, the kept secret headers included.");
        }

        // The tool list describes the server as last tested: a different server (or credentials) needs a new test.
        if (Connection(server) != before)
        {
            server.Tools = null;
            server.ToolsRefreshedAt = null;
            server.ListingFailedAt = null;
            server.ProtocolVersion = null;
            server.ServerName = null;
            server.ServerVersion = null;
        }

        // An update, never an insert: a server deleted since it was read (by a write that did not wait for the lock) stays deleted.
        session.Update(server);
        try
        {
            await session.SaveChangesAsync(cancellationToken);
        }
        catch (Exception e) when (ProviderStore.IsUniqueViolation(e))
        {
            throw CreateMcpServerHandler.Duplicate(name);
        }
        catch (Exception e) when (ProviderStore.IsStale(e))
        {
            // Written since it was read by what does not take the lock (a test or a chat turn storing the tool list, a key rotation), or deleted.
            await using var read = sessions.Query();
            _ = await read.LoadAsync<McpServerConnection>(command.Id, cancellationToken) ?? throw new NotFoundException("MCP server", command.Id);
            throw new ConflictException(
                $"MCP server '{server.Name}' was changed by another request while this one was applied (a test or a chat turn storing its tool " +
                "list): nothing was changed. Send the update again.");
        }

        return McpServerResponse.From(server, connector, logger);
    }

    /// <summary>
    /// Refuses to keep stored secrets for another server: headers for a URL on another host, variables for another
    /// program, other arguments or another plain environment (a stdio server is whatever its command line and its
    /// variables make it). They are never returned, and pointing the settings elsewhere must not read them either.
    /// </summary>
    private static void EnsureSameServer(McpServerConnection server, McpServerRequest body, bool stdio)
    {
        if (!stdio && !ProviderStore.SameServer(server.Url, body.Url?.Trim()))
        {
            throw new BadRequestException("secretHeaders",
                $"'secretHeaders' must be sent again when 'url' moves to another server ({ProviderStore.Origin(server.Url)} to " +
                $"{ProviderStore.Origin(body.Url?.Trim())}): stored secret headers are only sent to the server they were given for. Send {{}} to remove them.");
        }

        if (stdio && (server.Command != body.Command?.Trim() || !server.Arguments.SequenceEqual(body.Arguments ?? [])))
        {
            throw new BadRequestException("secretEnvironment",
                "'secretEnvironment' must be sent again when 'command' or 'arguments' change: stored secret variables are only given " +
                "to the program they were given for. Send {} to remove them.");
        }

        if (stdio && !SameEnvironment(server.Environment, body.Environment))
        {
            // A plain variable can tell the same program where to send what it holds (API_BASE_URL, OPENAI_BASE_URL,
            // GITHUB_HOST, a proxy, a certificate file): no list of such names is complete, so any change counts.
            throw new BadRequestException("secretEnvironment",
                "'secretEnvironment' must be sent again when 'environment' changes (a variable added, removed or given another value): " +
                "a plain variable can tell the program where to connect (API_BASE_URL, a proxy, a certificate file), so stored secret " +
                "variables are only given to the program as it was set up when they were sent. Send {} to remove them.");
        }
    }

    /// <summary>
    /// Whether <paramref name="sent"/> is the stored plain environment as it is: the same names with the same values. A
    /// name that looks secret is never among the stored plain ones, so sending one is a change too (a new secret value).
    /// </summary>
    private static bool SameEnvironment(IReadOnlyDictionary<string, string> stored, IReadOnlyDictionary<string, string>? sent)
        => (sent?.Count ?? 0) == stored.Count
           && (sent ?? new Dictionary<string, string>()).All(e => stored.TryGetValue(e.Key, out var value) && string.Equals(value, e.Value, StringComparison.Ordinal));

    /// <summary>What decides which server is reached and how (secret values by their cipher, which changes whenever one is sent).</summary>
    private static string Connection(McpServerConnection s) => string.Join('\n',
        [
            s.Transport, s.Command ?? "", s.Url ?? "", string.Join('\u001f', s.Arguments),
            .. s.Environment.OrderBy(e => e.Key, StringComparer.Ordinal).Select(e => $"env:{e.Key}={e.Value}"),
            .. s.SecretEnvironment.OrderBy(e => e.Key, StringComparer.Ordinal).Select(e => $"secret-env:{e.Key}={e.Value.Cipher}"),
            .. s.Headers.OrderBy(h => h.Key, StringComparer.Ordinal).Select(h => $"header:{h.Key}={h.Value}"),
            .. s.SecretHeaders.OrderBy(h => h.Key, StringComparer.Ordinal).Select(h => $"secret-header:{h.Key}={h.Value.Cipher}"),
        ]);
}

internal static class UpdateMcpServerEndpoint
{
    public static void MapUpdateMcpServer(this IEndpointRouteBuilder group) =>
        group.MapPut("/{id}", async Task<Ok<McpServerResponse>> (Guid id, McpServerRequest body, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new UpdateMcpServer(id, body), ct)))
            .WithName("UpdateMcpServer")
            .WithSummary("Replace an MCP server's settings")
            .WithDescription("Leave 'secretHeaders' / 'secretEnvironment' out to keep the stored secret values (they are never returned), " +
                "send {} to remove them. They are kept for the same server only: a 'url' on another scheme, host or port, or another " +
                "'command', 'arguments' or plain 'environment' (a variable added, removed or changed), needs them sent again (400 otherwise). Changing what the server is or how it is reached " +
                "clears its tool list until the next test.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity);
}
