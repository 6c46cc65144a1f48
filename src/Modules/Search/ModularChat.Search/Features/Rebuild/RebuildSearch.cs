using Marten;
using Marten.Events.Daemon.Coordination;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Security;
using ModularChat.Search.Projection;
using ModularChat.Search.Storage;
using Npgsql;
using Wolverine.Runtime;
using Wolverine.Runtime.Agents;

namespace ModularChat.Search.Features.Rebuild;

/// <summary>Where a rebuild of the search read model stands.</summary>
/// <param name="State">"idle" (none since this node started), "running", "succeeded" or "failed".</param>
/// <param name="OrphanVectorsRemoved">Vectors whose entry no longer exists after the replay, removed at the end.</param>
public sealed record SearchRebuildStatus(string State, DateTimeOffset? StartedAt, DateTimeOffset? FinishedAt, string? Error, long? OrphanVectorsRemoved);

/// <summary>
/// Rebuilds the search read model on demand (what <c>projections rebuild</c> does from the command line): the
/// projection's tables are emptied and every conversation and summary event is replayed. Vectors are kept and
/// reused for unchanged texts, so no embedding is paid twice; at the end, vectors whose entry did not come back are
/// removed and every node reloads its in-memory index. Runs in the background on the node that received the request.
/// </summary>
internal sealed partial class SearchRebuilds(
    IServiceProvider services, SearchDatabase database, IOptions<SearchOptions> options, TimeProvider clock, IHostApplicationLifetime lifetime,
    ILogger<SearchRebuilds> logger)
{
    private readonly Lock _gate = new();
    private SearchRebuildStatus _status = new("idle", null, null, null, null);
    private Task _running = Task.CompletedTask;

    public SearchRebuildStatus Status
    {
        get
        {
            lock (_gate)
            {
                return _status;
            }
        }
    }

    /// <summary>The running rebuild (completed when none runs).</summary>
    public Task Running
    {
        get
        {
            lock (_gate)
            {
                return _running;
            }
        }
    }

    /// <summary>Starts a rebuild unless one is running; returns the status either way.</summary>
    /// <exception cref="ConflictException">
    /// The event store holds more events than <see cref="SearchOptions.MaxOnlineRebuildEvents"/>, or this node does not run the
    /// search projection (another node of the cluster does, or none yet).
    /// </exception>
    public async Task<SearchRebuildStatus> StartAsync(CancellationToken cancellationToken)
    {
        if (Status.State == "running")
        {
            return Status;
        }

        var limit = options.Value.MaxOnlineRebuildEvents;
        if (limit > 0)
        {
            var (events, _) = await DaemonProgress.ReadAsync(services.GetRequiredService<IDocumentStore>(), cancellationToken);
            if (events > limit)
            {
                // Refused before anything is emptied: a replay that runs out of the event store's time leaves the read model half built.
                throw new ConflictException(
                    $"The event store holds {events} events, more than a rebuild here may replay (Search:MaxOnlineRebuildEvents, {limit}): " +
                    "it must finish within the event store's 5-minute rebuild time, or it fails with the read model half rebuilt. " +
                    "Stop the service and run `projections rebuild -p SearchEntries --shard-timeout 6h`, or raise the setting.",
                    new Dictionary<string, object?> { ["events"] = events, ["maxOnlineRebuildEvents"] = limit });
            }
        }

        if (!RunsTheProjection())
        {
            // Rebuilt here while another node's agent runs the projection, both write its progress and the running agent
            // stops for good ("out of order"): nothing would be indexed for any tenant until the nodes restart.
            throw new ConflictException(
                "This node does not run the search projection (another node of the cluster does, or it is not assigned yet), " +
                "so it cannot rebuild it: send the request again (a load balancer may route it to the node that runs it), or " +
                "stop the service and run `projections rebuild -p SearchEntries`.");
        }

        lock (_gate)
        {
            if (_status.State != "running")
            {
                _status = new SearchRebuildStatus("running", clock.GetUtcNow(), null, null, null);
                _running = Task.Run(RunAsync);
            }

            return _status;
        }
    }

    /// <summary>Whether the search projection's agent runs on this node (Wolverine assigns it to one node of the cluster).</summary>
    private bool RunsTheProjection()
    {
        var shard = $"/{SearchEntriesProjection.ProjectionName}/All".ToLowerInvariant();
        return services.GetRequiredService<IWolverineRuntime>().Agents.AllRunningAgentUris()
            .Any(uri => uri.Scheme == "event-subscriptions" && uri.AbsolutePath.EndsWith(shard, StringComparison.OrdinalIgnoreCase));
    }

    private async Task RunAsync()
    {
        var cancellation = lifetime.ApplicationStopping;
        try
        {
            LogStarted(logger);
            await RebuildProjectionAsync(cancellation);
            var removed = await CleanUpAsync(cancellation);
            lock (_gate)
            {
                _status = _status with { State = "succeeded", FinishedAt = clock.GetUtcNow(), OrphanVectorsRemoved = removed };
            }

            LogFinished(logger, removed);
        }
        catch (Exception e)
        {
            LogFailed(logger, e);
            lock (_gate)
            {
                _status = _status with { State = "failed", FinishedAt = clock.GetUtcNow(), Error = e.Message };
            }
        }
    }

    private async Task RebuildProjectionAsync(CancellationToken cancellation)
    {
        // Under Wolverine-managed distribution, Wolverine rebuilds and then resumes the projection's continuous agent.
        var shard = $"{SearchEntriesProjection.ProjectionName}:All";
        if (services.GetService<IEventSubscriptionAgentFamily>() is { } agents
            && await agents.TryRebuildRegisteredProjectionAsync(shard, null, cancellation))
        {
            return;
        }

        var daemon = services.GetRequiredService<IProjectionCoordinator>().DaemonForMainDatabase();
        await daemon.RebuildProjectionAsync(SearchEntriesProjection.ProjectionName, TimeSpan.FromMinutes(5), cancellation);
    }

    private async Task<long> CleanUpAsync(CancellationToken cancellation)
    {
        var schema = database.Schema;
        await using var connection = await database.OpenAsync(cancellation);
        await using var command = new NpgsqlCommand($"""
            with orphans as (
                delete from {schema.Vectors} v
                where not exists (select 1 from {schema.Entries} e where e.tenant_id = v.tenant_id and e.id = v.entry_id)
                returning 1
            ),
            bumped as (
                insert into {schema.State} (id, generation) values (1, 1)
                on conflict (id) do update set generation = {schema.State}.generation + 1
            )
            select count(*) from orphans
            """, connection);
        return (long)(await command.ExecuteScalarAsync(cancellation) ?? 0L);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Rebuilding the search read model")]
    private static partial void LogStarted(ILogger logger);

    [LoggerMessage(Level = LogLevel.Information, Message = "Rebuilt the search read model ({Removed} orphan vectors removed)")]
    private static partial void LogFinished(ILogger logger, long removed);

    [LoggerMessage(Level = LogLevel.Error, Message = "Rebuilding the search read model failed")]
    private static partial void LogFailed(ILogger logger, Exception exception);
}

internal static class RebuildSearchEndpoints
{
    public const string Path = "/api/admin/search/rebuild";

    public static void MapRebuildSearch(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup(Path).WithTags("Search administration").RequireAuthorization(Policies.Operator);
        group.MapPost("/", async Task<Accepted<SearchRebuildStatus>> (SearchRebuilds rebuilds, CancellationToken cancellationToken)
                => TypedResults.Accepted(Path, await rebuilds.StartAsync(cancellationToken)))
            .WithName("RebuildSearch")
            .WithSummary("Rebuild the search read model from the event store (operator role)")
            .WithDescription("Starts a rebuild in the background (or reports the running one): 202 with its status; poll GET for progress. " +
                             "409 on a node that does not run the search projection (in a cluster, one node does), or when the event store " +
                             "holds more events than Search:MaxOnlineRebuildEvents (use the CLI).")
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status401Unauthorized)
            .ProducesProblem(StatusCodes.Status403Forbidden);
        group.MapGet("/", Ok<SearchRebuildStatus> (SearchRebuilds rebuilds) => TypedResults.Ok(rebuilds.Status))
            .WithName("SearchRebuildStatus")
            .WithSummary("Status of the last search rebuild started on this node (operator role)");
    }
}
