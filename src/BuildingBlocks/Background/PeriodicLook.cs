using Marten.Exceptions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace ModularChat.BuildingBlocks.Background;

/// <summary>
/// A node's look at the database every <paramref name="interval"/> (a gauge's count, a projection's progress), from its
/// start until the host stops it: it goes on while the node stops, as the node's metrics are exported until then. While
/// PostgreSQL is away every look fails the same way: logged once by <see cref="RepeatedFailures"/>, not once a round. The
/// rounds keep their pace, so the figures are current again one interval after the outage.
/// </summary>
/// <param name="work">What a look does, for the failure's log entry ("Counting the dead letters").</param>
public abstract class PeriodicLook(TimeSpan interval, TimeProvider clock, ILogger logger, string work) : BackgroundService
{
    /// <summary>One look.</summary>
    protected abstract Task LookAsync(CancellationToken cancellationToken);

    protected sealed override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var failures = new RepeatedFailures(logger, work, interval, drawApart: false);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await LookAsync(stoppingToken).ConfigureAwait(false);
                failures.Succeeded();
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is NpgsqlException or InvalidOperationException or MartenCommandException)
            {
                failures.Failed(e);
            }

            try
            {
                await Task.Delay(interval, clock, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}
