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

/// <summary>Where the deployment's last rebuild of the search read model stands (the same on every node).</summary>
/// <param name="State">"idle" (none yet), "running", "succeeded" or "failed".</param>
/// <param name="Error">Why it failed, also when the node running it stopped before it finished.</param>
/// <param name="OrphanVectorsRemoved">Vectors whose entry no longer exists after the replay, removed at the end.</param>
/// <param name="Node">The node that ran it (its id in the node list).</param>
public sealed record SearchRebuildStatus(
    string State, DateTimeOffset? StartedAt, DateTimeOffset? FinishedAt, string? Error, long? OrphanVectorsRemoved, Guid? Node = null)
{
    public static readonly SearchRebuildStatus Idle = new("idle", null, null, null, null);
}

/// <summary>
/// Rebuilds the search read model on demand (what <c>projections rebuild</c> does from the command line): the
/// projection's tables are emptied and every conversation and summary event is replayed. Vectors are kept and
/// reused for unchanged texts, so no embedding is paid twice; at the end, vectors whose entry did not come back are
/// removed and every node reloads its in-memory index. Runs in the background on the node that received the request.
/// </summary>
/// <remarks>
/// The last rebuild's status is one row of <see cref="SearchSchema.Rebuilds"/>, so every node reports it and one rebuild
/// runs at a time in the deployment. The running node refreshes the row's heartbeat at each
/// <c>Messaging:HealthCheckInterval</c>; a running rebuild whose heartbeat is older than <c>Messaging:StaleNodeTimeout</c>
/// (by the database's clock) was cut off with its node: it is reported failed, and a new request may start another.
/// </remarks>
internal sealed partial class SearchRebuilds(
    IServiceProvider services, SearchDatabase database, IOptions<SearchOptions> options, TimeProvider clock, IHostApplicationLifetime lifetime,
    ILogger<SearchRebuilds> logger)
{
    /// <summary>How long a node stopping during a rebuild waits to record it failed (else it is found stale later).</summary>
    private static readonly TimeSpan FinishTimeout = TimeSpan.FromSeconds(5);

    private IWolverineRuntime Runtime => services.GetRequiredService<IWolverineRuntime>();

    private Guid NodeId => Runtime.Options.UniqueNodeId;

    private TimeSpan StaleAfter => Runtime.Options.Durability.StaleNodeTimeout;

    /// <summary>The deployment's last rebuild, as recorded.</summary>
    public async Task<SearchRebuildStatus> StatusAsync(CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand($"""
            select state, started_at, finished_at, error, orphan_vectors_removed, node, heartbeat_at,
                   state = 'running' and heartbeat_at < now() - $1 as stale
            from {database.Schema.Rebuilds} where id = 1
            """, connection)
        {
            Parameters = { new() { Value = StaleAfter } },
        };
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        if (!await reader.ReadAsync(cancellationToken))
        {
            return SearchRebuildStatus.Idle;
        }

        var status = new SearchRebuildStatus(
            reader.GetString(0),
            reader.GetFieldValue<DateTimeOffset>(1),
            reader.IsDBNull(2) ? null : reader.GetFieldValue<DateTimeOffset>(2),
            reader.IsDBNull(3) ? null : reader.GetString(3),
            reader.IsDBNull(4) ? null : reader.GetInt64(4),
            reader.GetGuid(5));
        return reader.GetBoolean(7)
            ? status with
            {
                State = "failed",
                Error = $"The node running the rebuild ({status.Node}) stopped before it finished: last heard from at " +
                        $"{reader.GetFieldValue<DateTimeOffset>(6):O}. The read model may be half rebuilt: start another.",
            }
            : status;
    }

    /// <summary>Starts a rebuild unless one is running in the deployment; returns the status either way.</summary>
    /// <exception cref="ConflictException">
    /// The event store holds more events than <see cref="SearchOptions.MaxOnlineRebuildEvents"/>, or this node does not run the
    /// search projection (another node of the cluster does, or none yet).
    /// </exception>
    public async Task<SearchRebuildStatus> StartAsync(CancellationToken cancellationToken)
    {
        var current = await StatusAsync(cancellationToken);
        if (current.State == "running")
        {
            return current;
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

        var run = Guid.NewGuid();
        if (await ClaimAsync(run, cancellationToken) is not { } started)
        {
            // Another request (here or on another node) started one since: report it.
            return await StatusAsync(cancellationToken);
        }

        _ = Task.Run(() => RunAsync(run)); // records its own outcome, failures included
        return started;
    }

    /// <summary>Whether the search projection's agent runs on this node (Wolverine assigns it to one node of the cluster).</summary>
    private bool RunsTheProjection()
    {
        var shard = $"/{SearchEntriesProjection.ProjectionName}/All".ToLowerInvariant();
        return Runtime.Agents.AllRunningAgentUris()
            .Any(uri => uri.Scheme == "event-subscriptions" && uri.AbsolutePath.EndsWith(shard, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>Records <paramref name="run"/> as the running rebuild unless another one runs (null then).</summary>
    private async Task<SearchRebuildStatus?> ClaimAsync(Guid run, CancellationToken cancellationToken)
    {
        var now = clock.GetUtcNow();
        var started = now.AddTicks(-(now.Ticks % 10)); // as PostgreSQL keeps it (microseconds), so that every answer gives the same time
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand($"""
            insert into {database.Schema.Rebuilds} as r (id, run_id, state, started_at, node, heartbeat_at)
            values (1, $1, 'running', $2, $3, now())
            on conflict (id) do update set run_id = excluded.run_id, state = excluded.state, started_at = excluded.started_at,
                finished_at = null, error = null, orphan_vectors_removed = null, node = excluded.node, heartbeat_at = excluded.heartbeat_at
            where r.state <> 'running' or r.heartbeat_at < now() - $4
            """, connection)
        {
            Parameters =
            {
                new() { Value = run },
                new() { Value = started },
                new() { Value = NodeId },
                new() { Value = StaleAfter },
            },
        };
        return await command.ExecuteNonQueryAsync(cancellationToken) == 1
            ? new SearchRebuildStatus("running", started, null, null, null, NodeId)
            : null;
    }

    private async Task RunAsync(Guid run)
    {
        var stopping = lifetime.ApplicationStopping;
        // Cancelled when the node stops, or when another rebuild took the row over (this one was taken for cut off).
        using var running = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        var cancellation = running.Token;
        using var beating = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        var heartbeat = BeatAsync(run, running, beating.Token);
        string state;
        string? error = null;
        long? removed = null;
        try
        {
            LogStarted(logger);
            await RebuildProjectionAsync(cancellation);
            removed = await CleanUpAsync(cancellation);
            state = "succeeded";
            LogFinished(logger, removed.Value);
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested && !stopping.IsCancellationRequested)
        {
            // Taken over (logged by the heartbeat): the row is the other rebuild's, so nothing below records this one.
            state = "failed";
        }
        catch (Exception e)
        {
            LogFailed(logger, e);
            state = "failed";
            error = stopping.IsCancellationRequested ? "The node stopped during the rebuild: the read model may be half rebuilt." : e.Message;
        }

        await beating.CancelAsync();
        await heartbeat;
        using var timeout = new CancellationTokenSource(FinishTimeout);
        try
        {
            await FinishAsync(run, state, error, removed, timeout.Token);
        }
        catch (Exception e)
        {
            LogNotRecorded(logger, e, state, StaleAfter);
        }
    }

    /// <summary>
    /// Keeps the rebuild's heartbeat fresh while it runs, so that no node takes it for cut off. When the row is no longer
    /// this run's, another rebuild started after this node was taken for cut off (its database unreachable for longer
    /// than <c>Messaging:StaleNodeTimeout</c>): <paramref name="running"/> is cancelled, so that two rebuilds do not
    /// replay into the same tables, and the other one's outcome is the one reported.
    /// </summary>
    private async Task BeatAsync(Guid run, CancellationTokenSource running, CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(Runtime.Options.Durability.HealthCheckPollingTime);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken))
            {
                try
                {
                    await using var connection = await database.OpenAsync(cancellationToken);
                    await using var command = new NpgsqlCommand(
                        $"update {database.Schema.Rebuilds} set heartbeat_at = now() where id = 1 and run_id = $1", connection)
                    {
                        Parameters = { new() { Value = run } },
                    };
                    if (await command.ExecuteNonQueryAsync(cancellationToken) == 0)
                    {
                        LogTakenOver(logger, StaleAfter);
                        await running.CancelAsync();
                        return;
                    }
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    LogHeartbeatFailed(logger, e);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Finished (or the node is stopping).
        }
    }

    /// <summary>Records the outcome, unless another rebuild took over the row (this one was taken for cut off meanwhile).</summary>
    private async Task FinishAsync(Guid run, string state, string? error, long? removed, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand($"""
            update {database.Schema.Rebuilds} set state = $2, finished_at = $3, error = $4, orphan_vectors_removed = $5, heartbeat_at = now()
            where id = 1 and run_id = $1
            """, connection)
        {
            Parameters =
            {
                new() { Value = run },
                new() { Value = state },
                new() { Value = clock.GetUtcNow() },
                new() { Value = (object?)error ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text },
                new() { Value = (object?)removed ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Bigint },
            },
        };
        await command.ExecuteNonQueryAsync(cancellationToken);
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
            """, connection)
        {
            // One statement over every vector: on a large store it can take longer than the connection's command timeout,
            // which would fail the rebuild after its whole replay. It runs as long as it needs, stopped only by the node
            // stopping or another rebuild taking over (its heartbeat keeps it reported as running meanwhile).
            CommandTimeout = 0,
        };
        return (long)(await command.ExecuteScalarAsync(cancellation) ?? 0L);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Rebuilding the search read model")]
    private static partial void LogStarted(ILogger logger);

    [LoggerMessage(Level = LogLevel.Information, Message = "Rebuilt the search read model ({Removed} orphan vectors removed)")]
    private static partial void LogFinished(ILogger logger, long removed);

    [LoggerMessage(Level = LogLevel.Error, Message = "Rebuilding the search read model failed")]
    private static partial void LogFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Refreshing the search rebuild's heartbeat failed; the next check retries")]
    private static partial void LogHeartbeatFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Another search rebuild took over from this one, which had not refreshed its heartbeat for {StaleAfter}: this one stops")]
    private static partial void LogTakenOver(ILogger logger, TimeSpan staleAfter);

    [LoggerMessage(Level = LogLevel.Error, Message = "The search rebuild's outcome ({State}) could not be recorded: it is reported failed once its heartbeat is older than {StaleAfter}")]
    private static partial void LogNotRecorded(ILogger logger, Exception exception, string state, TimeSpan staleAfter);
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
            .WithDescription("Starts a rebuild in the background (or reports the one running on any node): 202 with its status; poll GET for progress. " +
                             "409 on a node that does not run the search projection (in a cluster, one node does), or when the event store " +
                             "holds more events than Search:MaxOnlineRebuildEvents (use the CLI).")
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status401Unauthorized)
            .ProducesProblem(StatusCodes.Status403Forbidden);
        group.MapGet("/", async Task<Ok<SearchRebuildStatus>> (SearchRebuilds rebuilds, CancellationToken cancellationToken)
                => TypedResults.Ok(await rebuilds.StatusAsync(cancellationToken)))
            .WithName("SearchRebuildStatus")
            .WithSummary("Status of the deployment's last search rebuild, whichever node ran it (operator role)");
    }
}
