using System.Reflection;
using Wolverine.Runtime;

namespace ModularChat.Host.Nodes;

/// <summary>
/// This node: Wolverine's id for it (so its row joins Wolverine's <c>wolverine_nodes</c> and agent assignments), where it
/// runs, its version and the fingerprint of its settings, fixed when it starts (the modules read their options once).
/// </summary>
internal sealed class LocalNode(IWolverineRuntime runtime, IConfiguration configuration, TimeProvider clock)
{
    public Guid Id { get; } = runtime.Options.UniqueNodeId;

    public DateTimeOffset StartedAt { get; } = clock.GetUtcNow();

    /// <summary>The Host's informational version (<c>1.0.0+commit</c>), as every node of one build reports it.</summary>
    public string Version { get; } = typeof(LocalNode).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
                                     ?? typeof(LocalNode).Assembly.GetName().Version?.ToString() ?? "unknown";

    public IReadOnlyDictionary<string, string> Settings { get; } = SettingsFingerprint.Compute(configuration);

    /// <summary>This node as it stands now: Wolverine's number for it and the agents it runs change while it runs.</summary>
    public NodeRecord Describe() => new(
        Id, runtime.Options.Durability.AssignedNodeNumber, Environment.MachineName, Environment.ProcessId, Version, StartedAt, clock.GetUtcNow(),
        Settings, runtime.Agents.AllRunningAgentUris().Select(u => u.ToString()).Order(StringComparer.Ordinal).ToList());
}
