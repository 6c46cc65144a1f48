using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using ModularChat.BuildingBlocks.Tenancy;
using ModularChat.Search.Embeddings;
using ModularChat.Search.Projection;
using ModularChat.Search.Storage;
using Npgsql;

namespace ModularChat.Search.Features.Status;

/// <summary>How far indexing has come for the caller's tenant.</summary>
/// <param name="Entries">Messages and summary revisions in the search read model.</param>
/// <param name="Embedded">Entries with a vector of the tenant's current model.</param>
/// <param name="Pending">Entries waiting for the embedding worker (only those already in the read model).</param>
/// <param name="Refused">
/// Entries whose text the tenant's embedding model kept refusing (<c>Search:Embeddings:MaxRefusedAttempts</c>): no longer
/// retried, found by keyword search only, until the model changes or search is rebuilt. Not counted in <see cref="Pending"/>.
/// </param>
/// <param name="Model">The tenant's current embedding model.</param>
/// <param name="IndexingLag">
/// Events appended to the store that the search projection has not read yet. It is counted over all tenants (the
/// projection reads one event sequence for all of them; a count per tenant would read the unindexed events), so it can be
/// above 0 while another tenant's messages wait, and it stays above 0 while the projection is stopped.
/// </param>
/// <param name="UpToDate">
/// True when the projection has read every appended event, no entry waits for embedding, and the tenant's entries were
/// queued again since its embedding model last changed (until the worker notices a change, <see cref="Pending"/> is 0
/// while the vectors are the old model's): searches then see everything written before the request (refused entries by
/// keyword only). <see cref="Pending"/> alone says 0 before the projection has queued new messages.
/// </param>
public sealed record SearchStatusResponse(long Entries, long Embedded, long Pending, long Refused, string Model, long IndexingLag, bool UpToDate);

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
        await using var command = Command(schema, database.EventsSchema, tenantId, embedder.Model);
        command.Connection = connection;
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        var (pending, refused, lag) = (reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4));
        var modelNoticed = reader.IsDBNull(5) || reader.GetString(5) == embedder.Model;
        return new SearchStatusResponse(reader.GetInt64(0), reader.GetInt64(1), pending, refused, embedder.Model, lag, pending == 0 && lag == 0 && modelNoticed);
    }

    /// <summary>
    /// The counts, with the tenant hidden from the planner (<see cref="SearchSchema.TenantParameter"/>): for a tenant
    /// that imported its history since the last ANALYZE, a visible tenant was estimated at a row or two and the vectors
    /// were matched to their entries by scanning all of the tenant's entries per vector (100 s at 20,000; the request
    /// ran past the command timeout and answered 503). <c>SearchPlanTests</c> checks the plan.
    /// The indexing lag is the highest event sequence (one probe of <c>mt_events</c>' primary key, backwards) less the
    /// projection's progression. Not Marten's high-water mark: only a running daemon moves it.
    /// </summary>
    internal static NpgsqlCommand Command(SearchSchema schema, string eventsSchema, string tenantId, string model)
    {
        var tenant = SearchSchema.TenantParameter(1);
        var command = new NpgsqlCommand($"""
            select (select count(*) from {schema.Entries} where tenant_id = {tenant}),
                   (select count(*) from {schema.Vectors} v where v.tenant_id = {tenant} and v.model = $2
                      and exists (select 1 from {schema.Entries} e where e.tenant_id = {tenant} and e.id = v.entry_id)),
                   (select count(*) from {schema.Pending} where tenant_id = {tenant} and not_before < 'infinity'),
                   (select count(*) from {schema.Pending} where tenant_id = {tenant} and not_before = 'infinity'),
                   greatest(coalesce((select max(seq_id) from {eventsSchema}.mt_events), 0)
                       - coalesce((select last_seq_id from {eventsSchema}.mt_event_progression where name = $3), 0), 0),
                   (select model from {schema.Models} where tenant_id = $1)
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = tenantId });
        command.Parameters.Add(new NpgsqlParameter { Value = model });
        command.Parameters.Add(new NpgsqlParameter { Value = $"{SearchEntriesProjection.ProjectionName}:All" });
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
