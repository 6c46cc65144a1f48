using System.Threading.Channels;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Messaging;
using Wolverine;

namespace ModularChat.Summaries.Features.Sweep;

/// <summary>What became of a sweep request handed to this node's sweep service.</summary>
public enum SweepHandover
{
    /// <summary>
    /// The loop took it: it runs now (after another node's sweep, should one run; should this node begin to stop while it
    /// waits for that one, it is handed on to another node: <see cref="HandedOnSweep"/>).
    /// </summary>
    Taken,

    /// <summary>A sweep runs or waits on this node: nothing was queued.</summary>
    Busy,

    /// <summary>The node is stopping and starts no sweep: nothing was queued (another node takes the request).</summary>
    NodeStopping,
}

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
/// (<see cref="NodeStopping"/>): the hand-over itself says so (<see cref="RequestAsync"/>). A requested sweep taken before
/// and still waiting for another node's sweep is stored as a durable message for any node (<see cref="HandedOnSweep"/>):
/// it was accepted (202), and nothing accepted is lost.
/// While PostgreSQL is away every sweep fails the same way: the first failure is logged with its exception, then less and
/// less, and the scheduled sweeps draw apart (<see cref="RepeatedFailures"/>); an error with its stack trace at every
/// interval flooded the log. A failure that is not the database being away (<see cref="DatabaseOutages.IsDatabaseAway"/>)
/// is an error, each time.
/// </summary>
public sealed partial class SummarySweepService(
    SummarySweep sweep,
    IDocumentStore store,
    IServiceScopeFactory scopes,
    IOptions<SummariesOptions> options,
    TimeProvider clock,
    NodeStopping nodeStopping,
    ILogger<SummarySweepService> logger) : SharedBackgroundWork(nodeStopping)
{
    /// <summary>How often a requested sweep tries again while another node sweeps.</summary>
    internal static readonly TimeSpan BusyRetryInterval = TimeSpan.FromSeconds(2);

    /// <summary>
    /// When a handed-on sweep is due (again): about one poll of Wolverine's scheduled messages, so a node that runs on takes it
    /// soon, and one that cannot take it yet (sweeping, or stopping too) does not look at it more often.
    /// </summary>
    internal static readonly TimeSpan HandOnDelay = TimeSpan.FromSeconds(5);

    /// <summary>At most one request handed over and not yet answered by the loop.</summary>
    private readonly Channel<PendingSweep> _requests = Channel.CreateBounded<PendingSweep>(1);

    /// <summary>Orders the hand-over against the loop's taking a request, starting a sweep and ending with the node's stop.</summary>
    private readonly Lock _gate = new();
    private bool _closed;
    private volatile bool _running;

    /// <summary>True while this node sweeps.</summary>
    public bool Running => _running;

    /// <summary>
    /// Hands a sweep request to this node's loop and says what became of it. <see cref="SweepHandover.Taken"/> only once the
    /// loop has taken it to run, so an accepted request is never left behind: checking that the node is not stopping and
    /// then queueing the request let the loop end with the stop in between, and the request was answered 202 and never run.
    /// The loop is waiting for it when nothing runs here, so the answer comes at once.
    /// </summary>
    public async Task<SweepHandover> RequestAsync(SweepRequest request, CancellationToken cancellationToken)
    {
        var pending = new PendingSweep(request);
        lock (_gate)
        {
            if (_closed)
            {
                return SweepHandover.NodeStopping;
            }

            if (_running || !_requests.Writer.TryWrite(pending))
            {
                return SweepHandover.Busy;
            }
        }

        // Answered by the loop: taken, or refused when the node began to stop before the loop took it.
        return await pending.Answer.Task.WaitAsync(cancellationToken);
    }

    /// <summary>The last sweep of any node.</summary>
    public async Task<SweepResult?> LastAsync(CancellationToken cancellationToken)
    {
        await using var session = store.QuerySession();
        return (await session.LoadAsync<SummarySweepRecord>(SummarySweepRecord.Key, cancellationToken))?.Last;
    }

    protected override async Task ExecuteAsync(CancellationToken newWork, CancellationToken stoppingToken)
    {
        try
        {
            await SweepUntilStoppingAsync(newWork, stoppingToken);
        }
        finally
        {
            // The node stops (newWork): nothing more is taken, and a request handed over meanwhile is refused, not left behind.
            lock (_gate)
            {
                _closed = true;
                while (_requests.Reader.TryRead(out var left))
                {
                    left.Answer.TrySetResult(SweepHandover.NodeStopping);
                }
            }
        }
    }

    private async Task SweepUntilStoppingAsync(CancellationToken newWork, CancellationToken stoppingToken)
    {
        var interval = options.Value.Sweep.Interval;
        var failures = new RepeatedFailures(logger, "The summary sweep", interval);
        while (!newWork.IsCancellationRequested)
        {
            PendingSweep? pending = null;
            try
            {
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(newWork);
                if (interval > TimeSpan.Zero)
                {
                    wait.CancelAfter(failures.Wait);
                }

                pending = await _requests.Reader.ReadAsync(wait.Token);
            }
            catch (OperationCanceledException) when (!newWork.IsCancellationRequested)
            {
                // The schedule's time.
            }
            catch (OperationCanceledException)
            {
                return;
            }

            lock (_gate)
            {
                if (newWork.IsCancellationRequested)
                {
                    pending?.Answer.TrySetResult(SweepHandover.NodeStopping);
                    return;
                }

                // Running before the answer: whoever hears "taken" sees this node's sweep running (read without the lock), not
                // about to run.
                _running = true;

                // A request that came as the schedule's time did runs instead (the schedule comes round again).
                if (pending is not null || _requests.Reader.TryRead(out pending))
                {
                    pending.Answer.TrySetResult(SweepHandover.Taken);
                }
            }

            var scheduled = pending is null;
            var request = pending?.Request ?? new SweepRequest();
            try
            {
                if (scheduled && await SweptRecentlyAsync(interval / 2, stoppingToken))
                {
                    failures.Succeeded();
                    continue;
                }

                var result = await sweep.RunAsync(request, report: null, stoppingToken);
                while (!result.Ran && !scheduled && await WaitForOtherSweepAsync(newWork))
                {
                    // Another node is sweeping. A scheduled sweep is done by it; a requested one (a rebuild, one tenant)
                    // may be another sweep altogether, so it runs after it instead of being dropped after its 202.
                    result = await sweep.RunAsync(request, report: null, stoppingToken);
                }

                if (!result.Ran && !scheduled)
                {
                    // The node began to stop while the request waited: it was answered 202, so another node runs it (the
                    // node still drains its requests, and its messaging runs: this is the moment, not the service's stop).
                    await HandOnAsync(request);
                }
                else if (result.Ran)
                {
                    await using var session = store.LightweightSession();
                    session.Store(new SummarySweepRecord { Last = result });
                    await session.SaveChangesAsync(stoppingToken);
                }

                failures.Succeeded();
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (DatabaseOutages.IsDatabaseAway(e))
            {
                failures.Failed(e);
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

    /// <summary>
    /// Stores a requested sweep this node accepted and will not run as a durable message, scheduled for any node (this one's
    /// next start included), which hands it to its own sweep service (<see cref="HandedOnSweepHandler"/>). The node is
    /// draining: its messaging still runs.
    /// </summary>
    private async Task HandOnAsync(SweepRequest request)
    {
        try
        {
            await using var scope = scopes.CreateAsyncScope();
            await scope.ServiceProvider.GetRequiredService<IMessageBus>().ScheduleAsync(new HandedOnSweep(request), HandOnDelay);
            LogHandedOn(logger, request.Resummarize, request.TenantId ?? "all");
        }
        catch (Exception e)
        {
            LogHandOnFailed(logger, e, request.Resummarize, request.TenantId ?? "all");
        }
    }

    /// <summary>Waits before a requested sweep tries again to start after another node's; false at once when the node begins to stop.</summary>
    private async Task<bool> WaitForOtherSweepAsync(CancellationToken newWork)
    {
        if (newWork.IsCancellationRequested)
        {
            return false;
        }

        LogRequestWaits(logger, BusyRetryInterval.TotalSeconds);
        try
        {
            await Task.Delay(BusyRetryInterval, clock, newWork);
            return true;
        }
        catch (OperationCanceledException) when (newWork.IsCancellationRequested)
        {
            return false;
        }
    }

    private async Task<bool> SweptRecentlyAsync(TimeSpan within, CancellationToken cancellationToken)
        => await LastAsync(cancellationToken) is { } last && last.StartedAt + last.Duration > clock.GetUtcNow() - within;

    /// <summary>A request handed over, and the loop's answer to it.</summary>
    private sealed class PendingSweep(SweepRequest request)
    {
        public SweepRequest Request { get; } = request;

        public TaskCompletionSource<SweepHandover> Answer { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "The requested summary sweep waits for another node's sweep to end (trying again every {Seconds} s)")]
    private static partial void LogRequestWaits(ILogger logger, double seconds);

    [LoggerMessage(Level = LogLevel.Information,
        Message = "This node is stopping before the requested summary sweep (resummarize: {Resummarize}, tenants: {Tenant}) could run: handed on to another node")]
    private static partial void LogHandedOn(ILogger logger, bool resummarize, string tenant);

    [LoggerMessage(Level = LogLevel.Error,
        Message = "This node is stopping before the requested summary sweep (resummarize: {Resummarize}, tenants: {Tenant}) could run, and it could not be handed on: request it again")]
    private static partial void LogHandOnFailed(ILogger logger, Exception exception, bool resummarize, string tenant);

    [LoggerMessage(Level = LogLevel.Error, Message = "Summary sweep failed")]
    private static partial void LogSweepFailed(ILogger logger, Exception exception);
}
