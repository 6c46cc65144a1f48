using Marten;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Background;
using Npgsql;

namespace ModularChat.Conversations;

/// <summary>
/// Samples how fast the whole cluster appends, once a second, from the event store's sequence (every event takes the
/// next number, whichever node appends it), and tells <see cref="AppendBursts"/>: background work on this node steps aside
/// for an import that another node serves, as it does for one served here. One cheap read a second per node; nothing
/// when yielding is off. It goes on while the node stops, until the host stops it: it claims nothing, and the work this
/// node still finishes meanwhile (a running summary job, an embedding) asks <see cref="AppendBursts"/> whether to step aside.
/// </summary>
internal sealed partial class ClusterAppendRate(
    IDocumentStore store, AppendBursts bursts, IOptions<BackgroundOptions> options, TimeProvider clock, ILogger<ClusterAppendRate> logger)
    : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    /// <summary>The numbers handed out so far (a sequence that never handed one out shows its start value, not yet taken).</summary>
    private readonly string _sql =
        $"select case when is_called then last_value else last_value - 1 end from {store.Options.Events.DatabaseSchemaName}.mt_events_sequence";
    private (long Value, long At)? _last;
    private bool _failing;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (options.Value.YieldAboveMessagesPerSecond == 0)
        {
            return;
        }

        using var timer = new PeriodicTimer(Interval, clock);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await SampleAsync(stoppingToken);
                _failing = false;
            }
            catch (Exception) when (stoppingToken.IsCancellationRequested)
            {
                // The node stops: a sample cut short, or failing on its way (Npgsql's connect waits out its own timeout on a
                // server that takes connections but does not answer, whatever the token says), is no failure of the host's.
                return;
            }
            catch (Exception e)
            {
                // Without samples the node goes by its own rate (a sample counts for a few seconds only).
                if (!_failing)
                {
                    LogSamplingFailed(logger, e);
                    _failing = true;
                }

                _last = null;
            }
        }
    }

    /// <summary>Reads the sequence and, from the second reading on, reports the events appended per second since the previous one.</summary>
    internal async Task SampleAsync(CancellationToken cancellationToken)
    {
        long value;
        await using (var connection = store.Storage.Database.CreateConnection())
        {
            await connection.OpenAsync(cancellationToken);
            await using var read = new NpgsqlCommand(_sql, connection);
            value = Convert.ToInt64(await read.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
        }

        var now = clock.GetTimestamp();
        if (_last is { } last && clock.GetElapsedTime(last.At, now) is { TotalSeconds: > 0 } elapsed)
        {
            bursts.ObserveCluster((long)((value - last.Value) / elapsed.TotalSeconds));
        }

        _last = (value, now);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not sample the cluster's append rate; background work goes by this node's own appends until it can")]
    private static partial void LogSamplingFailed(ILogger logger, Exception exception);
}
