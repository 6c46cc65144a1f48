using Marten;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Providers.Clients;
using ModularChat.Providers.Domain;

namespace ModularChat.Providers.Features.Providers;

internal sealed record DeleteProvider(Guid Id) : ICommand;

internal sealed class DeleteProviderHandler(TenantSessions sessions, ProviderDirectory directory) : ICommandHandler<DeleteProvider>
{
    public async ValueTask<Unit> Handle(DeleteProvider command, CancellationToken cancellationToken)
    {
        var tenant = sessions.TenantId;
        await using var session = sessions.Write();
        await ProviderStore.LockTenantAsync(session, ProviderStore.ProvidersLock, cancellationToken);
        var all = await session.Query<ProviderSettings>().OrderBy(p => p.CreatedAt).ToListAsync(cancellationToken);
        var provider = all.SingleOrDefault(p => p.Id == command.Id) ?? throw new NotFoundException("Provider", command.Id);
        session.Delete(provider);
        if (provider.IsDefault && all.FirstOrDefault(p => p.Id != provider.Id) is { } next)
        {
            next.IsDefault = true;
            session.Store(next);
        }

        try
        {
            await session.SaveChangesAsync(cancellationToken);
        }
        finally
        {
            await directory.ChangedAsync(tenant);
        }

        return Unit.Value;
    }
}

internal static class DeleteProviderEndpoint
{
    public static void MapDeleteProvider(this IEndpointRouteBuilder group) =>
        group.MapDelete("/{id}", async Task<NoContent> (Guid id, ISender sender, CancellationToken ct) =>
            {
                await sender.Send(new DeleteProvider(id), ct);
                return TypedResults.NoContent();
            })
            .WithName("DeleteProvider")
            .WithSummary("Delete an LLM provider and its stored key")
            .WithDescription("When it was the default, the oldest remaining provider becomes the default.")
            .ProducesProblem(StatusCodes.Status404NotFound);
}
