using Npgsql;
using Wolverine;

namespace ModularChat.Host.Nodes;

/// <summary>
/// Refuses command-line commands that are unsafe here. Always: <c>describe</c>, which prints every configuration value,
/// keys and connection strings among them (and then fails on a batched message's name). While nodes of the deployment
/// run, the commands that write what they use:
/// <list type="bullet">
/// <item><c>projections</c> (its daemon), <c>projections run</c> and <c>projections rebuild</c>: their projection daemon and
/// the command's replay would write the same projections, and the running node's projection then stops for good
/// (<c>ProgressionProgressOutOfOrderException</c>, which Wolverine does not restart): nothing was indexed for search until
/// the nodes restarted, and retention waited for the projection meanwhile. <c>projections list</c> is left alone.</item>
/// <item><c>resources clear</c> and <c>resources teardown</c>: they empty or drop the tables the nodes are reading and
/// writing (conversations, summaries, the durable queues), under requests and jobs in flight. <c>resources</c> (set-up),
/// <c>check</c>, <c>statistics</c> and <c>list</c> are left alone.</item>
/// <item><c>storage clear</c> and <c>storage rebuild</c> (Wolverine's message storage: the queued jobs), <c>clear-handled</c>
/// (the record that keeps a message from being handled twice) and <c>marten</c> (resets projections and event data).</item>
/// </list>
/// </summary>
internal static class CommandGuard
{
    /// <summary>Why the command in <paramref name="args"/> may not run now (null: it may), from the live nodes in <c>mc_nodes</c>.</summary>
    public static async Task<string?> RefusalAsync(IServiceProvider services, string[] args)
    {
        if (NeverRuns(args) is { } never)
        {
            return never;
        }

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

    /// <summary>Why the command in <paramref name="args"/> is not offered at all, or null.</summary>
    internal static string? NeverRuns(string[] args)
        => args.Length > 0 && string.Equals(args[0], "describe", StringComparison.OrdinalIgnoreCase)
            ? "'describe' is not offered: it prints every configuration value, the signing key, the master key, API keys and " +
              "connection strings among them. 'help' lists the commands, GET /api/admin/nodes the running nodes and the settings " +
              "sections in which they differ, and 'resources statistics' the database."
            : null;

    /// <summary>What the command in <paramref name="args"/> would do to running nodes, or null when it writes nothing they use.</summary>
    internal static string? Harm(string[] args)
    {
        if (WritesProjections(args))
        {
            return "Their projections would be written twice, and the running node's search indexing would stop until it restarts. " +
                   "Stop the service first, or rebuild search inside it with POST /api/admin/search/rebuild.";
        }

        var command = args.Length > 0 ? args[0].ToLowerInvariant() : "";
        return command switch
        {
            "resources" when Action(args, "clear", "teardown") is { } action
                => $"'resources {action}' would {(action == "clear" ? "empty" : "drop")} the tables they are reading and writing " +
                   "(conversations, summaries, search, the queued jobs) under their requests and jobs. Stop the service first.",
            "storage" when Action(args, "clear", "rebuild") is { } action
                => $"'storage {action}' would empty Wolverine's message storage under them: the summary, retention and indexing " +
                   "jobs they have queued would be lost. Stop the service first.",
            "clear-handled" => "'clear-handled' would delete the record that keeps them from handling a message twice while they " +
                               "are handling messages. Stop the service first.",
            "marten" => "'marten' rewinds or resets projections and event data under their projection daemon. Stop the service first.",
            _ => null,
        };
    }

    /// <summary>The first of <paramref name="actions"/> among the arguments after the command (any of them, not only the first: an option's value may come before the action, <c>--timeout 60 clear</c>).</summary>
    private static string? Action(string[] args, params string[] actions)
        => args.Skip(1).Select(a => a.ToLowerInvariant()).FirstOrDefault(actions.Contains);

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
