using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;

namespace ModularChat.BuildingBlocks.Background;

/// <summary>
/// The one rule for work any node could do (claiming queued work, sweeping or cleaning what all nodes share, calling a
/// model) on a node that is stopping: from <c>ApplicationStopping</c> (SIGTERM) the host drains its requests, for up to its
/// shutdown timeout, before it stops its background services. Work started meanwhile only delays the stop, and what the
/// timeout cuts is done again elsewhere, so such work starts nothing new once the stop has <see cref="Begun"/>; what it
/// started runs on. Background services follow it through <see cref="SharedBackgroundWork"/>; a message handler, which
/// cannot be one, asks it before it begins. A process that is no node of the deployment (a command run beside it) starts
/// none of that work at all (<see cref="RunsSharedWork"/>).
/// </summary>
/// <param name="runsSharedWork">False in a command run beside the nodes (<see cref="RunsSharedWork"/>).</param>
public sealed class NodeStopping(IHostApplicationLifetime lifetime, bool runsSharedWork = true)
{
    /// <summary>
    /// Whether this process does the work any node could do: a node does, a command (<c>retention</c>, <c>summaries</c>)
    /// does not. It does its own work and leaves the nodes' to them: their background services do nothing in it.
    /// </summary>
    public bool RunsSharedWork => runsSharedWork;

    /// <summary>Whether the node has begun to stop: start no new shared work, and refuse what asks for some.</summary>
    public bool Begun => lifetime.ApplicationStopping.IsCancellationRequested;

    /// <summary>Cancelled when the node begins to stop.</summary>
    public CancellationToken Token => lifetime.ApplicationStopping;
}

/// <summary>Registration of <see cref="NodeStopping"/>.</summary>
public static class NodeStoppingRegistration
{
    /// <summary>The node's <see cref="NodeStopping"/> (once, however often called; the first call's kind of process wins).</summary>
    /// <param name="runsSharedWork">False in a command run beside the nodes (<see cref="NodeStopping.RunsSharedWork"/>).</param>
    public static IServiceCollection AddNodeStopping(this IServiceCollection services, bool runsSharedWork = true)
    {
        services.TryAddSingleton(sp => new NodeStopping(sp.GetRequiredService<IHostApplicationLifetime>(), runsSharedWork));
        return services;
    }
}
