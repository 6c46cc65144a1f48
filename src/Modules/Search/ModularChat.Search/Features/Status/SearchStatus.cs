using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
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
/// Events of the caller's tenant appended to the store that the search projection has not read yet (other tenants' are
/// not counted: another tenant's import does not hold this tenant's status back). Counted up to
/// <c>Search:MaxCountedIndexingLag</c> (10,000): a larger lag reads as that figure. It stays above 0 while the projection
/// is stopped.
/// </param>
/// <param name="UpToDate">
/// True when the projection has read every event of the tenant appended before the request, no entry of the tenant
/// waits for embedding, and the tenant's entries were queued again since its embedding model last changed (until the
/// worker notices a change, <see cref="Pending"/> is 0 while the vectors are the old model's): searches then see
/// everything the tenant wrote before the request (refused entries by keyword only). Other tenants' unread events and
/// queue do not count. <see cref="Pending"/> alone says 0 before the projection has queued new messages.
/// </param>
public sealed record SearchStatusResponse(long Entries, long Embedded, long Pending, long Refused, string Model, long IndexingLag, bool UpToDate);

internal sealed record GetSearchStatus : IQuery<SearchStatusResponse>;

internal sealed class GetSearchStatusHandler(TenantContext tenant, SearchDatabase database, TenantEmbedders embedders, IOptions<SearchOptions> options)
    : IQueryHandler<GetSearchStatus, SearchStatusResponse>
{
    public async ValueTask<SearchStatusResponse> Handle(GetSearchStatus query, CancellationToken cancellationToken)
    {
        var tenantId = tenant.TenantId;
        var embedder = await embedders.ForTenantAsync(tenantId, cancellationToken);
        var schema = database.Schema;
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = Command(schema, database.EventsSchema, tenantId, embedder.Model, options.Value.MaxCountedIndexingLag);
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
    /// The indexing lag counts the tenant's events past the projection's progression (not Marten's high-water mark: only
    /// a running daemon moves it), at most <paramref name="maxLag"/> of them, by walking the tenant's part of
    /// <see cref="EventsByTenantIndex"/> in order. The row comparison on (tenant, sequence) is what keeps the planner
    /// there: with <c>tenant_id = $1 and seq_id &gt; progression</c> and a limit, a tenant the statistics know well was
    /// planned as a walk of the primary key from the progression on, filtered by tenant, which reads every other
    /// tenant's unread events when this one has few (0.6 s behind another tenant's 500,000 on the development machine).
    /// Nothing else bounds the sequence: a plain <c>seq_id &gt;</c> beside the row comparison made the planner expect
    /// so few rows that it read all of them through a bitmap and sorted them (all of a tenant's 50,000 unread events
    /// for a cap of 1,000), where the walk stops at the cap.
    /// </summary>
    internal static NpgsqlCommand Command(SearchSchema schema, string eventsSchema, string tenantId, string model, int maxLag)
    {
        var tenant = SearchSchema.TenantParameter(1);
        var read = $"coalesce((select last_seq_id from {eventsSchema}.mt_event_progression where name = $3), 0)";
        var command = new NpgsqlCommand($"""
            select (select count(*) from {schema.Entries} where tenant_id = {tenant}),
                   (select count(*) from {schema.Vectors} v where v.tenant_id = {tenant} and v.model = $2
                      and exists (select 1 from {schema.Entries} e where e.tenant_id = {tenant} and e.id = v.entry_id)),
                   (select count(*) from {schema.Pending} where tenant_id = {tenant} and not_before < 'infinity'),
                   (select count(*) from {schema.Pending} where tenant_id = {tenant} and not_before = 'infinity'),
                   (select count(*) from (select 1 from {eventsSchema}.mt_events
                        where tenant_id = {tenant} and (tenant_id, seq_id) > ({tenant}, {read})
                        order by tenant_id, seq_id limit $4) unread),
                   (select model from {schema.Models} where tenant_id = $1)
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = tenantId });
        command.Parameters.Add(new NpgsqlParameter { Value = model });
        command.Parameters.Add(new NpgsqlParameter { Value = $"{SearchEntriesProjection.ProjectionName}:All" });
        command.Parameters.Add(new NpgsqlParameter { Value = maxLag });
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
