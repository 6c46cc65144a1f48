using ModularChat.BuildingBlocks.Background;
using Wolverine.Runtime;

namespace ModularChat.Host.Nodes;

/// <summary>
/// Keeps this node's row in <see cref="NodeDirectory"/>: written when the node starts, refreshed at every
/// <c>Messaging:HealthCheckInterval</c> (when Wolverine's nodes check in too) and removed when it stops. Rows silent for
/// <c>Messaging:StaleNodeTimeout</c> (a killed node) are ignored and removed by whichever node looks next, as Wolverine
/// takes such a node for dead after that long. After each refresh it compares the live nodes with this one
/// (<see cref="PeerSettingsLog"/>).
/// </summary>
/// <remarks>
/// It goes on while the node stops (SIGTERM: the node drains its requests and finishes the work it started) and says
/// nothing of the stop until the host stops it: the node is alive and answers until then, and nothing hands it work by
/// its row (the stopping services refuse new work themselves, see <see cref="ModularChat.BuildingBlocks.Background.SharedBackgroundWork"/>).
/// A row left to go stale during a drain longer than <c>Messaging:StaleNodeTimeout</c> would have the other nodes
/// drop it while it still runs; its removal when the host stops it is what tells them it is gone.
/// </remarks>
internal sealed partial class NodeHeartbeat(
    LocalNode local, NodeDirectory directory, PeerSettingsLog peers, IWolverineRuntime runtime, ILogger<NodeHeartbeat> logger) : BackgroundService
{
    /// <summary>How long a stopping node waits for its row's removal (the others drop it after the stale timeout anyway).</summary>
    private static readonly TimeSpan RemoveTimeout = TimeSpan.FromSeconds(5);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var durability = runtime.Options.Durability;
        using var timer = new PeriodicTimer(durability.HealthCheckPollingTime);
        // While PostgreSQL is away every check fails the same way: logged once, not once a check (the outage log says the
        // rest). The checks keep their pace: the row's first refresh after the outage must not come late.
        var failures = new RepeatedFailures(logger, "Recording this node in the node list", durability.HealthCheckPollingTime, drawApart: false);
        try
        {
            do
            {
                try
                {
                    var self = local.Describe();
                    peers.Observe(self, await directory.RefreshAsync(self, durability.StaleNodeTimeout, stoppingToken), durability.StaleNodeTimeout);
                    failures.Succeeded();
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    failures.Failed(e);
                }
            }
            while (await timer.WaitForNextTickAsync(stoppingToken));
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping.
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(RemoveTimeout);
        try
        {
            await directory.RemoveAsync(local.Id, timeout.Token);
        }
        catch (Exception e)
        {
            LogRemoveFailed(logger, e, runtime.Options.Durability.StaleNodeTimeout);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Removing this node from the node list failed; the other nodes drop it after {StaleAfter}")]
    private static partial void LogRemoveFailed(ILogger logger, Exception exception, TimeSpan staleAfter);
}
