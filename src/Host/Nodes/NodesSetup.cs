using Microsoft.AspNetCore.Http.HttpResults;
using ModularChat.BuildingBlocks.Security;
using Wolverine.Runtime;

namespace ModularChat.Host.Nodes;

/// <summary>The answer of <c>GET /api/admin/nodes</c>.</summary>
/// <param name="Node">The id of the node that answered.</param>
/// <param name="Nodes">The live nodes, oldest first.</param>
public sealed record NodeList(Guid Node, IReadOnlyList<NodeView> Nodes);

/// <summary>One live node of the deployment.</summary>
/// <param name="Id">Wolverine's id of the node (the <c>id</c> of its row in <c>wolverine_nodes</c>).</param>
/// <param name="Agents">The Wolverine agents it ran at its last check (e.g. <c>event-subscriptions://...searchentries/all</c>: the search projection).</param>
/// <param name="DifferentSettings">The settings sections whose values differ from the answering node's (names only).</param>
public sealed record NodeView(
    Guid Id, int WolverineNodeNumber, string Machine, int ProcessId, string Version, DateTimeOffset StartedAt, DateTimeOffset LastSeenAt,
    IReadOnlyList<string> Agents, IReadOnlyList<string> DifferentSettings);

/// <summary>The node list: each node records itself in PostgreSQL, and operators (and every node's log) see who runs what with which settings.</summary>
internal static class NodesSetup
{
    public const string Path = "/api/admin/nodes";

    public static IServiceCollection AddModularChatNodes(this IServiceCollection services, HostRole role)
    {
        services.AddSingleton<LocalNode>();
        services.AddSingleton<NodeDirectory>();
        services.AddSingleton<PeerSettingsLog>();
        if (role == HostRole.Node)
        {
            services.AddHostedService<NodeHeartbeat>(); // a command is no node of the list (HostRole.Command)
        }

        return services;
    }

    public static void MapModularChatNodes(this IEndpointRouteBuilder app)
        => app.MapGet(Path, async Task<Ok<NodeList>> (LocalNode local, NodeDirectory directory, IWolverineRuntime runtime, CancellationToken ct) =>
            {
                var live = await directory.LoadLiveAsync(runtime.Options.Durability.StaleNodeTimeout, ct);
                return TypedResults.Ok(new NodeList(local.Id, live.Select(n => new NodeView(
                    n.Id, n.WolverineNodeNumber, n.Machine, n.ProcessId, n.Version, n.StartedAt, n.LastSeenAt, n.Agents,
                    SettingsFingerprint.Differences(local.Settings, n.Settings))).ToList()));
            })
            .RequireAuthorization(Policies.Operator)
            .WithTags("Operations")
            .WithName("ListNodes")
            .WithSummary("The live nodes of the deployment (operator role)")
            .WithDescription("Every node that checked in within Messaging:StaleNodeTimeout: Wolverine's id and number for it, machine, process, " +
                             "version, start, last check, the Wolverine agents it runs (projections), and the settings sections whose values " +
                             "differ from the answering node's (names only; secrets are never compared).")
            .ProducesProblem(StatusCodes.Status401Unauthorized)
            .ProducesProblem(StatusCodes.Status403Forbidden);
}
