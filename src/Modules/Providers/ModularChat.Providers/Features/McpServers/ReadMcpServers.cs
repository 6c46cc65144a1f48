using Marten;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Features.Providers;
using ModularChat.Providers.Mcp;

namespace ModularChat.Providers.Features.McpServers;

internal sealed record ListMcpServers : IQuery<IReadOnlyList<McpServerResponse>>;

internal sealed record GetMcpServer(Guid Id) : IQuery<McpServerResponse>;

internal sealed class ListMcpServersHandler(TenantSessions sessions, McpConnector connector, ILogger<ListMcpServersHandler> logger) : IQueryHandler<ListMcpServers, IReadOnlyList<McpServerResponse>>
{
    public async ValueTask<IReadOnlyList<McpServerResponse>> Handle(ListMcpServers query, CancellationToken cancellationToken)
    {
        await using var session = sessions.Query();
        var all = await session.Query<McpServerConnection>().OrderBy(s => s.CreatedAt).ToListAsync(cancellationToken);
        return all.Select(s => McpServerResponse.From(s, connector, logger)).ToList();
    }
}

internal sealed class GetMcpServerHandler(TenantSessions sessions, McpConnector connector, ILogger<GetMcpServerHandler> logger) : IQueryHandler<GetMcpServer, McpServerResponse>
{
    public async ValueTask<McpServerResponse> Handle(GetMcpServer query, CancellationToken cancellationToken)
    {
        await using var session = sessions.Query();
        var server = await session.LoadAsync<McpServerConnection>(query.Id, cancellationToken) ?? throw new NotFoundException("MCP server", query.Id);
        return McpServerResponse.From(server, connector, logger);
    }
}

internal sealed record DeleteMcpServer(Guid Id) : ICommand;

internal sealed class DeleteMcpServerHandler(TenantSessions sessions) : ICommandHandler<DeleteMcpServer>
{
    public async ValueTask<Unit> Handle(DeleteMcpServer command, CancellationToken cancellationToken)
    {
        await using var session = sessions.Write();
        await ProviderStore.LockTenantAsync(session, ProviderStore.McpServersLock, cancellationToken);
        var server = await session.LoadAsync<McpServerConnection>(command.Id, cancellationToken) ?? throw new NotFoundException("MCP server", command.Id);
        session.Delete(server);
        await session.SaveChangesAsync(cancellationToken);
        return Unit.Value;
    }
}

internal static class ReadMcpServersEndpoints
{
    public static void MapReadMcpServers(this IEndpointRouteBuilder group)
    {
        group.MapGet("/", async Task<Ok<IReadOnlyList<McpServerResponse>>> (ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new ListMcpServers(), ct)))
            .WithName("ListMcpServers")
            .WithSummary("List the tenant's MCP servers (secrets masked, tools as last tested)");
        group.MapGet("/{id}", async Task<Ok<McpServerResponse>> (Guid id, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new GetMcpServer(id), ct)))
            .WithName("GetMcpServer")
            .WithSummary("Get an MCP server")
            .ProducesProblem(StatusCodes.Status404NotFound);
    }

    public static void MapDeleteMcpServer(this IEndpointRouteBuilder group)
    {
        group.MapDelete("/{id}", async Task<NoContent> (Guid id, ISender sender, CancellationToken ct) =>
            {
                await sender.Send(new DeleteMcpServer(id), ct);
                return TypedResults.NoContent();
            })
            .WithName("DeleteMcpServer")
            .WithSummary("Delete an MCP server and its stored secrets")
            .ProducesProblem(StatusCodes.Status404NotFound);
    }
}
