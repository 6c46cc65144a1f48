using Marten;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Background;
using ModularChat.Summaries.Domain;
using Npgsql;

namespace ModularChat.Summaries.Features.Sweep;

/// <summary>
/// Counts, every <see cref="SummariesOptions.BacklogRefreshInterval"/>, the conversations with a summary queued and not yet
/// written (the backlog gauge). It goes on while the node stops, until the host stops it: it claims nothing and calls no
/// model (one count), and this node's metrics are exported until then; a gauge frozen at SIGTERM would show the backlog
/// of before the deploy while the other nodes take over the stopping node's jobs.
/// </summary>
public sealed class SummaryBacklogMonitor(IDocumentStore store, SummariesMetrics metrics, IOptions<SummariesOptions> options, TimeProvider clock, ILogger<SummaryBacklogMonitor> logger)
    : PeriodicLook(options.Value.BacklogRefreshInterval, clock, logger, "Counting the summary backlog")
{
    private readonly string _sql = CountSql(store.Options.Schema.For<ConversationActivity>(), store.Options.Schema.For<SummaryProgress>());

    /// <summary>
    /// The conversations with a job pending above their coverage. It reads the activity rows with a pending mark (0 once
    /// covered: SummaryWriter clears it) from the mark's index, each with a probe of its progress: the backlog, not every
    /// conversation. Until 2026-12-07 covered marks stayed, and the count joined both whole tables (about 0.5 s at 200,000
    /// conversations, every 30 s on every node). Marks left covered by older builds are cleared by the next sweep (SummarySweep).
    /// </summary>
    internal static string CountSql(string activityTable, string progressTable) => $"""
        select count(*) from {activityTable} a
        where a.pending_up_to > 0
          and a.pending_up_to > coalesce((select p.covered_to from {progressTable} p where p.tenant_id = a.tenant_id and p.id = a.id), 0)
        """;

    protected override async Task LookAsync(CancellationToken cancellationToken)
    {
        await using var connection = store.Storage.Database.CreateConnection();
        await connection.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(_sql, connection);
        metrics.BacklogCounted(Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture));
    }
}
