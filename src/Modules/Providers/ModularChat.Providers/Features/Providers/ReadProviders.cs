using Marten;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Providers.Domain;

namespace ModularChat.Providers.Features.Providers;

internal sealed record ListProviders : IQuery<IReadOnlyList<ProviderResponse>>;

internal sealed record GetProvider(Guid Id) : IQuery<ProviderResponse>;

internal sealed class ListProvidersHandler(TenantSessions sessions) : IQueryHandler<ListProviders, IReadOnlyList<ProviderResponse>>
{
    public async ValueTask<IReadOnlyList<ProviderResponse>> Handle(ListProviders query, CancellationToken cancellationToken)
    {
        await using var session = sessions.Query();
        var all = await session.Query<ProviderSettings>().OrderBy(p => p.CreatedAt).ToListAsync(cancellationToken);
        return all.Select(ProviderResponse.From).ToList();
    }
}

internal sealed class GetProviderHandler(TenantSessions sessions) : IQueryHandler<GetProvider, ProviderResponse>
{
    public async ValueTask<ProviderResponse> Handle(GetProvider query, CancellationToken cancellationToken)
    {
        await using var session = sessions.Query();
        var provider = await session.LoadAsync<ProviderSettings>(query.Id, cancellationToken) ?? throw new NotFoundException("Provider", query.Id);
        return ProviderResponse.From(provider);
    }
}

internal static class ReadProvidersEndpoints
{
    public static void MapReadProviders(this IEndpointRouteBuilder group)
    {
        group.MapGet("/", async Task<Ok<IReadOnlyList<ProviderResponse>>> (ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new ListProviders(), ct)))
            .WithName("ListProviders")
            .WithSummary("List the tenant's LLM providers (keys masked)");
        group.MapGet("/{id}", async Task<Ok<ProviderResponse>> (Guid id, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new GetProvider(id), ct)))
            .WithName("GetProvider")
            .WithSummary("Get an LLM provider (key masked)")
            .ProducesProblem(StatusCodes.Status404NotFound);
    }
}
