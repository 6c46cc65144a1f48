using System.Numerics;
using Microsoft.Extensions.Logging;

namespace ModularChat.BuildingBlocks.Background;

/// <summary>
/// The failures in a row of a background worker that works in rounds on the database, and what is logged of them. While
/// PostgreSQL is away (a restart, a failover, the network) every round fails the same way: one warning with its stack trace
/// a round flooded the log (the embedding worker wrote 82 in a 40 s outage, the tombstone clean-up one a second in tests).
/// The first failure is logged with its exception, then one line, without it, at each doubling of their count (2, 4, 8,
/// ...), and one at Information when the work succeeds again; <see cref="Wait"/> draws the rounds apart meanwhile, unless the
/// work keeps its pace while it fails (<c>drawApart</c> false: a node's heartbeat, a gauge, whose next round after the
/// outage must not come late).
/// </summary>
/// <remarks>
/// Thread-safe: work a worker does beside its rounds (giving claimed rows back) counts its failures in the same series, so
/// one outage is one warning whichever of them meets it first.
/// </remarks>
/// <param name="work">What fails, as the log lines' subject ("The search embedding worker").</param>
/// <param name="interval">The wait between two rounds while none fails.</param>
/// <param name="drawApart">Whether rounds draw apart while they fail (<see cref="Wait"/>); if not, the log lines say the work keeps its pace.</param>
public sealed partial class RepeatedFailures(ILogger logger, string work, TimeSpan interval, bool drawApart = true)
{
    /// <summary>The longest wait between two rounds while they keep failing (unless <c>interval</c> itself is longer).</summary>
    public static readonly TimeSpan MaxWait = TimeSpan.FromSeconds(30);

    private readonly Lock _lock = new();
    private int _count;

    /// <summary>How many times in a row the work failed (0: its last attempt succeeded).</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _count;
            }
        }
    }

    /// <summary>
    /// The wait before the next round: the interval while nothing fails, then doubling with each failure in a row, at most
    /// <see cref="MaxWait"/> (or the interval, if it is longer); always the interval when rounds do not draw apart.
    /// </summary>
    public TimeSpan Wait
    {
        get
        {
            var count = Count;
            return count == 0 || !drawApart || interval >= MaxWait ? interval : TimeSpan.FromTicks(Math.Min(MaxWait.Ticks, interval.Ticks << Math.Min(count, 20)));
        }
    }

    /// <summary>Counts a failure: the first in a row is logged with <paramref name="exception"/>, then each doubling of the count.</summary>
    public void Failed(Exception exception)
    {
        int count;
        lock (_lock)
        {
            count = ++_count;
        }

        if (count == 1)
        {
            LogFailed(logger, exception, work);
        }
        else if (BitOperations.IsPow2(count) && drawApart)
        {
            LogStillFailing(logger, work, count, exception.GetType().Name, exception.Message, (interval > MaxWait ? interval : MaxWait).TotalSeconds);
        }
        else if (BitOperations.IsPow2(count))
        {
            LogStillFailingAtPace(logger, work, count, exception.GetType().Name, exception.Message, interval.TotalSeconds);
        }
    }

    /// <summary>The work succeeded: after failures, that is logged once.</summary>
    public void Succeeded()
    {
        int count;
        lock (_lock)
        {
            (count, _count) = (_count, 0);
        }

        if (count > 0)
        {
            LogWorksAgain(logger, work, count);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Work} failed; it tries again shortly")]
    private static partial void LogFailed(ILogger logger, Exception exception, string work);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Work} has failed {Failures} times in a row ({ErrorType}: {Error}); it tries again less often, at most every {Seconds} s")]
    private static partial void LogStillFailing(ILogger logger, string work, int failures, string errorType, string error, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Work} has failed {Failures} times in a row ({ErrorType}: {Error}); it tries again every {Seconds} s")]
    private static partial void LogStillFailingAtPace(ILogger logger, string work, int failures, string errorType, string error, double seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Work} works again after {Failures} failures in a row")]
    private static partial void LogWorksAgain(ILogger logger, string work, int failures);
}
