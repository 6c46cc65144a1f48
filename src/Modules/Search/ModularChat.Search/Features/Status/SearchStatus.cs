using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using ModularChat.BuildingBlocks.Tenancy;
using ModularChat.Search.Embeddings;
using ModularChat.Search.Storage;
using Npgsql;

namespace ModularChat.Search.Features.Status;

/// <summary>How far indexing has come for the caller's tenant.</summary>
/// <param name="Entries">Messages and summary revisions in the search read model.</param>
/// <param name="Embedded">Entries with a vector of the tenant's current model.</param>
/// <param name="Pending">Entries waiting for the embedding worker.</param>
/// <param name="Model">The tenant's current embedding model.</param>
public sealed record SearchStatusResponse(long Entries, long Embedded, long Pending, string Model);

internal sealed record GetSearchStatus : IQuery<SearchStatusResponse>;

internal sealed class GetSearchStatusHandler(TenantContext tenant, SearchDatabase database, TenantEmbedders embedders)
    : IQueryHandler<GetSearchStatus, SearchStatusResponse>
{
    public async ValueTask<SearchStatusResponse> Handle(GetSearchStatus query, CancellationToken cancellationToken)
    {
        var tenantId = tenant.TenantId;
        var embedder = await embedders.ForTenantAsync(tenantId, cancellationToken);
        var schema = database.Schema;
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = Command(schema, tenantId, embedder.Model);
        command.Connection = connection;
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        return new SearchStatusResponse(reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), embedder.Model);
    }

    /// <summary>
    /// The counts, with the tenant hidden from the planner (<see cref="SearchSchema.TenantParameter"/>): for a tenant
    /// that imported its history since the last ANALYZE, a visible tenant was estimated at a row or two and the vectors
    /// were matched to their entries by scanning all of the tenant's entries per vector (100 s at 20,000; the request
    /// ran past the command timeout and answered 503). <c>SearchPlanTests</c> checks the plan.
    /// </summary>
    internal static NpgsqlCommand Command(SearchSchema schema, string tenantId, string model)
    {
        var tenant = SearchSchema.TenantParameter(1);
        var command = new NpgsqlCommand($"""
            select (select count(*) from {schema.Entries} where tenant_id = {tenant}),
                   (select count(*) from {schema.Vectors} v where v.tenant_id = {tenant} and v.model = $2
                      and exists (select 1 from {schema.Entries} e where e.tenant_id = {tenant} and e.id = v.entry_id)),
                   (select count(*) from {schema.Pending} where tenant_id = {tenant})
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = tenantId });
        command.Parameters.Add(new NpgsqlParameter { Value = model });
        return command;
    }
}

internal static class SearchStatusEndpoint
{
    public static void MapSearchStatus(this IEndpointRouteBuilder group) =>
        group.MapGet("/status", async Task<Ok<SearchStatusResponse>> (ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new GetSearchStatus(), ct)))
            .WithName("SearchStatus")
            .WithSummary("Indexing progress of the caller's messages and summaries");
}
