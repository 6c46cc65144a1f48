using Npgsql;
using Wolverine;

namespace ModularChat.Host.Nodes;

/// <summary>
/// Refuses the command-line commands that write what running nodes of the deployment use, while such nodes run:
/// <list type="bullet">
/// <item><c>projections</c> (its daemon), <c>projections run</c> and <c>projections rebuild</c>: their projection daemon and
/// the command's replay would write the same projections, and the running node's projection then stops for good
/// (<c>ProgressionProgressOutOfOrderException</c>, which Wolverine does not restart): nothing was indexed for search until
/// the nodes restarted, and retention waited for the projection meanwhile. <c>projections list</c> is left alone.</item>
/// <item><c>resources clear</c> and <c>resources teardown</c>: they empty or drop the tables the nodes are reading and
/// writing (conversations, summaries, the durable queues), under requests and jobs in flight. <c>resources</c> (set-up),
/// <c>check</c>, <c>statistics</c> and <c>list</c> are left alone.</item>
/// </list>
/// </summary>
internal static class ProjectionsCommandGuard
{
    /// <summary>Why the command in <paramref name="args"/> may not run now (null: it may), from the live nodes in <c>mc_nodes</c>.</summary>
    public static async Task<string?> RefusalAsync(IServiceProvider services, string[] args)
    {
        if (Harm(args) is not { } harm)
        {
            return null;
        }

        var staleAfter = services.GetRequiredService<WolverineOptions>().Durability.StaleNodeTimeout;
        IReadOnlyList<NodeRecord> live;
        try
        {
            live = await services.GetRequiredService<NodeDirectory>().LoadLiveAsync(staleAfter, CancellationToken.None);
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UndefinedTable)
        {
            return null; // no node ever ran on this database
        }

        if (live.Count == 0)
        {
            return null;
        }

        var nodes = string.Join(", ", live.Select(n => $"{n.Machine} (process {n.ProcessId}, last seen {n.LastSeenAt:u})"));
        return $"{live.Count} node(s) of this deployment are running: {nodes}. {harm} A node that was killed counts as running " +
               $"until Messaging:StaleNodeTimeout ({staleAfter}) after it was last seen.";
    }

    /// <summary>What the command in <paramref name="args"/> would do to running nodes, or null when it writes nothing they use.</summary>
    internal static string? Harm(string[] args)
    {
        if (WritesProjections(args))
        {
            return "Their projections would be written twice, and the running node's search indexing would stop until it restarts. " +
                   "Stop the service first, or rebuild search inside it with POST /api/admin/search/rebuild.";
        }

        return args.Length > 0 && string.Equals(args[0], "resources", StringComparison.OrdinalIgnoreCase)
            // Any argument, not only the first: an option's value may come before the action (--timeout 60 clear).
            && args.Skip(1).FirstOrDefault(a => a.Equals("clear", StringComparison.OrdinalIgnoreCase) || a.Equals("teardown", StringComparison.OrdinalIgnoreCase)) is { } action
            ? $"'resources {action.ToLowerInvariant()}' would {(action.Equals("clear", StringComparison.OrdinalIgnoreCase) ? "empty" : "drop")} the tables " +
              "they are reading and writing (conversations, summaries, search, the queued jobs) under their requests and jobs. Stop the service first."
            : null;
    }

    /// <summary><c>projections</c> with no action (it runs the daemon), <c>run</c> or <c>rebuild</c>.</summary>
    internal static bool WritesProjections(string[] args)
    {
        if (args.Length == 0 || !string.Equals(args[0], "projections", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        var action = args.Skip(1).FirstOrDefault(a => !a.StartsWith('-'));
        return action is null || !string.Equals(action, "list", StringComparison.OrdinalIgnoreCase);
    }
}
