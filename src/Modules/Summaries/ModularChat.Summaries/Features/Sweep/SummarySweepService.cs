using System.Threading.Channels;
using Marten;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Background;

namespace ModularChat.Summaries.Features.Sweep;

/// <summary>The last sweep of any node (a single document of the default tenant).</summary>
public sealed class SummarySweepRecord
{
    public const string Key = "summaries-sweep";

    public string Id { get; set; } = Key;

    public SweepResult? Last { get; set; }
}

/// <summary>
/// Runs sweeps in the background on this node: on the configured schedule (skipped when any node swept within half an
/// interval) and on request (admin endpoint). Sweeps of several nodes never overlap (see <see cref="SummarySweep"/>).
/// A stopping node starts no sweep (it drains its requests, for up to the shutdown timeout, before this service is stopped):
/// a sweep that runs then finishes, the next one is another node's, and a sweep requested then is refused
/// (<see cref="NodeStopping"/>).
/// </summary>
public sealed partial class SummarySweepService(
    SummarySweep sweep,
    IDocumentStore store,
    IOptions<SummariesOptions> options,
    TimeProvider clock,
    NodeStopping nodeStopping,
    ILogger<SummarySweepService> logger) : SharedBackgroundWork(nodeStopping)
{
    /// <summary>How often a requested sweep tries again while another node sweeps.</summary>
    internal static readonly TimeSpan BusyRetryInterval = TimeSpan.FromSeconds(2);

    private readonly Channel<SweepRequest> _requests = Channel.CreateBounded<SweepRequest>(1);
    private volatile bool _running;

    /// <summary>True while this node sweeps.</summary>
    public bool Running => _running;

    /// <summary>Asks for a sweep now; false when one is already running or waiting on this node.</summary>
    public bool TryRequest(SweepRequest request) => !_running && _requests.Writer.TryWrite(request);

    /// <summary>The last sweep of any node.</summary>
    public async Task<SweepResult?> LastAsync(CancellationToken cancellationToken)
    {
        await using var session = store.QuerySession();
        return (await session.LoadAsync<SummarySweepRecord>(SummarySweepRecord.Key, cancellationToken))?.Last;
    }

    protected override async Task ExecuteAsync(CancellationToken newWork, CancellationToken stoppingToken)
    {
        while (!newWork.IsCancellationRequested)
        {
            var interval = options.Value.Sweep.Interval;
            SweepRequest request;
            var scheduled = false;
            try
            {
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(newWork);
                if (interval > TimeSpan.Zero)
                {
                    wait.CancelAfter(interval);
                }

                request = await _requests.Reader.ReadAsync(wait.Token);
            }
            catch (OperationCanceledException) when (!newWork.IsCancellationRequested)
            {
                request = new SweepRequest();
                scheduled = true;
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (newWork.IsCancellationRequested)
            {
                return;
            }

            _running = true;
            try
            {
                if (scheduled && await SweptRecentlyAsync(interval / 2, stoppingToken))
                {
                    continue;
                }

                var result = await sweep.RunAsync(request, report: null, stoppingToken);
                while (!result.Ran && !scheduled && !newWork.IsCancellationRequested)
                {
                    // Another node is sweeping. A scheduled sweep is done by it; a requested one (a rebuild, one tenant)
                    // may be another sweep altogether, so it runs after it instead of being dropped after its 202.
                    LogRequestWaits(logger, BusyRetryInterval.TotalSeconds);
                    await Task.Delay(BusyRetryInterval, clock, stoppingToken);
                    result = await sweep.RunAsync(request, report: null, stoppingToken);
                }

                if (result.Ran)
                {
                    await using var session = store.LightweightSession();
                    session.Store(new SummarySweepRecord { Last = result });
                    await session.SaveChangesAsync(stoppingToken);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                LogSweepFailed(logger, e);
            }
            finally
            {
                _running = false;
            }
        }
    }

    private async Task<bool> SweptRecentlyAsync(TimeSpan within, CancellationToken cancellationToken)
        => await LastAsync(cancellationToken) is { } last && last.StartedAt + last.Duration > clock.GetUtcNow() - within;

    [LoggerMessage(Level = LogLevel.Information, Message = "The requested summary sweep waits for another node's sweep to end (trying again every {Seconds} s)")]
    private static partial void LogRequestWaits(ILogger logger, double seconds);

    [LoggerMessage(Level = LogLevel.Error, Message = "Summary sweep failed")]
    private static partial void LogSweepFailed(ILogger logger, Exception exception);
}
