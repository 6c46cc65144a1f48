using Marten;
using Microsoft.Extensions.Hosting;
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
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var activity = store.Options.Schema.For<ConversationActivity>();
        var progress = store.Options.Schema.For<SummaryProgress>();
        var sql = $"select count(*) from {activity} a left join {progress} p on p.id = a.id and p.tenant_id = a.tenant_id " +
                  "where a.pending_up_to > coalesce(p.covered_to, 0)";
        // While PostgreSQL is away every count fails the same way: logged once, not once a round. The rounds keep their pace,
        // so the gauge is current again one interval after the outage.
        var failures = new RepeatedFailures(logger, "Counting the summary backlog", options.Value.BacklogRefreshInterval, drawApart: false);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await using var connection = store.Storage.Database.CreateConnection();
                await connection.OpenAsync(stoppingToken);
                await using var command = new NpgsqlCommand(sql, connection);
                metrics.BacklogCounted(Convert.ToInt64(await command.ExecuteScalarAsync(stoppingToken), System.Globalization.CultureInfo.InvariantCulture));
                failures.Succeeded();
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is NpgsqlException or InvalidOperationException)
            {
                failures.Failed(e);
            }

            try
            {
                await Task.Delay(options.Value.BacklogRefreshInterval, clock, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}
