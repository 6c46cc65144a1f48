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

internal sealed record CreateMcpServer(McpServerRequest Body) : ICommand<McpServerResponse>, IMcpServerCommand;

internal sealed class CreateMcpServerHandler(
    TenantSessions sessions, SecretBox secrets, IOptions<McpOptions> options, TimeProvider clock, McpConnector connector, ILogger<CreateMcpServerHandler> logger)
    : ICommandHandler<CreateMcpServer, McpServerResponse>
{
    public async ValueTask<McpServerResponse> Handle(CreateMcpServer command, CancellationToken cancellationToken)
    {
        var body = command.Body;
        var tenant = sessions.TenantId;
        await using var session = sessions.Write();
        await ProviderStore.LockTenantAsync(session, ProviderStore.McpServersLock, cancellationToken);
        var all = await session.Query<McpServerConnection>().Select(s => s.Name).ToListAsync(cancellationToken);
        var name = body.Name!.Trim();
        if (ProviderSettings.NameTaken(all, name))
        {
            throw Duplicate(name);
        }

        if (all.Count >= options.Value.MaxServersPerTenant)
        {
            throw new LimitExceededException("name", $"A tenant may have at most {options.Value.MaxServersPerTenant} MCP servers (Mcp:MaxServersPerTenant).");
        }

        var server = new McpServerConnection { Id = Guid.CreateVersion7(), TenantId = tenant, CreatedAt = clock.GetUtcNow() };
        McpServerSettings.Apply(secrets, tenant, body, server);

        session.Store(server);
        try
        {
            await session.SaveChangesAsync(cancellationToken);
        }
        catch (Exception e) when (ProviderStore.IsUniqueViolation(e))
        {
            throw Duplicate(name);
        }

        return McpServerResponse.From(server, connector, logger);
    }

    internal static ConflictException Duplicate(string name)
        => new($"An MCP server named '{name}' already exists: choose another name, or delete it first.",
            new Dictionary<string, object?> { ["field"] = "name" });
}

internal static class CreateMcpServerEndpoint
{
    public static void MapCreateMcpServer(this IEndpointRouteBuilder group) =>
        group.MapPost("/", async Task<Created<McpServerResponse>> (McpServerRequest body, ISender sender, CancellationToken ct) =>
            {
                var created = await sender.Send(new CreateMcpServer(body), ct);
                return TypedResults.Created($"/api/mcp-servers/{created.Id}", created);
            })
            .WithName("CreateMcpServer")
            .WithSummary("Add an MCP tool server (stdio, sse or streamable-http)")
            .WithDescription("Secret headers and environment values are encrypted at rest and never returned.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity);
}
