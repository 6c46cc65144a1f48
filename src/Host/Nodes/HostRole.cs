namespace ModularChat.Host.Nodes;

/// <summary>What a process of the Host is to the deployment: a node, or a command-line command run next to the nodes.</summary>
internal enum HostRole
{
    /// <summary>
    /// The service (started without arguments): a node of the deployment's cluster. It may lead the cluster, and it runs the
    /// work the leader assigns it: the asynchronous projections (search indexing) and the recovery of the nodes' messages.
    /// It is in the node list (<c>GET /api/admin/nodes</c>).
    /// </summary>
    Node,

    /// <summary>
    /// A command (<c>retention</c>, <c>summaries</c>, <c>projections</c>, ...). A command that starts the host handles its own
    /// messages (the jobs it queues, through the same durable queues and outbox) and checks in with Wolverine, but it never
    /// leads the cluster (so it assigns no work, to itself or to others), it offers to run no projection, its background
    /// services start none of the work any node could do (NodeStopping.RunsSharedWork: embeddings, sweeps, clean-ups), and
    /// it is not in the node list: it leaves the nodes' work to them. One exception: it offers to run the recovery of the
    /// database's queued messages (Wolverine's durability agent, which must stay enabled: see ConfigureModularChatMessaging),
    /// so a leader balancing its agents may hand it that while it runs, and it then handles what it recovers as a node would.
    /// Before, it was a node like the others for as long as it ran: the leader could move a projection to it (and back when
    /// it stopped), and with no other node in Wolverine's cluster it took the lead at its first check and started every
    /// projection. Beside a host that runs its projections by itself (Wolverine's solo mode: the tests' hosts) that ran
    /// them twice, and two daemons on one projection make one of them fail for good (ProgressionProgressOutOfOrderException,
    /// which Wolverine does not restart): the host's search indexing stopped, and retention waited for it.
    /// </summary>
    Command,
}

internal static class HostRoles
{
    /// <summary>
    /// The commands that work on the service's data with the service's settings: they make the start checks first, as the
    /// service does (<see cref="ChecksFirst"/>).
    /// </summary>
    private static readonly HashSet<string> CommandsOnTheData = new(StringComparer.OrdinalIgnoreCase) { "retention", "summaries", "rotate-keys" };

    /// <summary>
    /// Whether the command in <paramref name="args"/> makes the start checks (the settings, the database, its schema, the key
    /// ring, the search language) before it runs, so that a refusal is printed once, as its reasons, as the service's is.
    /// Before, <c>retention</c> and <c>summaries</c> failed in the host's start, which reported the refusal with its stack
    /// trace, and JasperFx printed it again ("ERROR:", ~100 lines); <c>rotate-keys</c>, which starts no host, failed on
    /// its first query with Npgsql's stack trace. Not the schema commands (<c>db-apply</c>, <c>resources</c>, ...): the
    /// checks apply the schema, which is their work to do or to report.
    /// </summary>
    public static bool ChecksFirst(string[] args) => args.Length > 0 && CommandsOnTheData.Contains(args[0]);

    /// <summary>The commands of JasperFx, Marten and Wolverine that read or write the database (<see cref="ReachesTheDatabaseFirst"/>).</summary>
    private static readonly HashSet<string> CommandsOnTheDatabase = new(StringComparer.OrdinalIgnoreCase)
    {
        "clear-handled", "db-apply", "db-assert", "db-patch", "event-query", "marten", "projection-run", "projections", "resources",
        "storage", "stream-query",
    };

    /// <summary>
    /// Whether the command in <paramref name="args"/> first checks that PostgreSQL answers, and is refused in one line naming
    /// where it looked when it does not. These commands work on the database but make none of the service's other start
    /// checks (<see cref="ChecksFirst"/>: the schema is theirs to apply or report). Before, an unreachable database ended
    /// them in Npgsql's exception and its stack trace, printed by JasperFx ("ERROR:") or by the Host. Not their <c>list</c>
    /// action (<c>projections list</c>, <c>resources list</c>), which reads the configuration alone, nor <c>db-list</c>,
    /// <c>db-dump</c> (the DDL the configuration makes), <c>check-env</c> (it reports each check it makes), <c>help</c>,
    /// <c>token</c> or <c>codegen</c>.
    /// </summary>
    public static bool ReachesTheDatabaseFirst(string[] args)
        => args.Length > 0 && CommandsOnTheDatabase.Contains(args[0])
           && !args.Skip(1).Contains("list", StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// The role of a process of the Host started with <paramref name="args"/>: a command when they name one, else a node.
    /// A node without arguments, with options alone (<c>--urls ...</c>, and the arguments a test's host factory passes:
    /// <c>--environment=...</c>, <c>--contentRoot=...</c>), or with <c>run</c>: JasperFx's command that serves.
    /// </summary>
    public static HostRole Of(string[] args)
        => args.Length == 0 || args[0].StartsWith('-') || string.Equals(args[0], "run", StringComparison.OrdinalIgnoreCase)
            ? HostRole.Node
            : HostRole.Command;
}
