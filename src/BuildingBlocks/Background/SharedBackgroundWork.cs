using Microsoft.Extensions.Hosting;

namespace ModularChat.BuildingBlocks.Background;

/// <summary>
/// A background service doing work that any node could do (it claims queued work, sweeps or cleans what all nodes share)
/// or that calls a model: a node that is stopping starts no more of it (<see cref="Background.NodeStopping"/>). So the
/// service gets two tokens: it starts new work only until <c>newWork</c> is cancelled (the node begins to stop), and what
/// it has started (a claim taken, a page read) runs on <c>stoppingToken</c> until it finishes or the host stops the
/// service, when it gives back what it claimed. Work only this node can do for itself (its heartbeat, its own gauges)
/// stays a plain <see cref="BackgroundService"/> and runs until the host stops it. In a command run beside the nodes
/// (<see cref="NodeStopping.RunsSharedWork"/> false) <c>newWork</c> is cancelled from the start: the service starts nothing,
/// as on a node that has begun to stop.
/// </summary>
public abstract class SharedBackgroundWork(NodeStopping nodeStopping) : BackgroundService
{
    protected sealed override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var newWork = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, nodeStopping.Token);
        if (!nodeStopping.RunsSharedWork)
        {
            await newWork.CancelAsync();
        }

        try
        {
            await ExecuteAsync(newWork.Token, stoppingToken);
        }
        catch (OperationCanceledException) when (newWork.IsCancellationRequested)
        {
            // The node stops: the work is left to the other nodes (or this one's next start).
        }
    }

    /// <summary>Runs the service's work.</summary>
    /// <param name="newWork">Cancelled when the node begins to stop (or the host stops the service): start nothing after it.</param>
    /// <param name="stoppingToken">Cancelled when the host stops the service: what was started runs on until then.</param>
    protected abstract Task ExecuteAsync(CancellationToken newWork, CancellationToken stoppingToken);
}
