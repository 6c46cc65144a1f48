using Marten;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Messaging;
using Npgsql;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// What Wolverine's, JasperFx's and Marten's (its projection daemon's, its command log's) own loggers write while PostgreSQL
/// is away. Their durability agents, listeners and leader election each retry on their own schedule and log every failure,
/// with its stack trace: a 45 s outage wrote ~1,700 lines; the daemon logged an error at each poll of the event store's
/// high-water mark (every ~1.4 s), and Marten's command log one for each command on a connection the outage broke. The
/// outage is logged here instead: once when it starts (a warning), then at most one line per
/// interval (<see cref="IntervalSetting"/>) while it lasts (how many entries were held back), and once when PostgreSQL answers again. Their
/// entries whose exception is the database being away (<see cref="DatabaseOutages.IsDatabaseAway"/>) are written at
/// Debug meanwhile, as is Wolverine's line for each message put back to wait for the database (<see cref="HoldsWait"/>);
/// every other entry of theirs, an error that is not the outage included, is written as it was.
/// </summary>
/// <remarks>
/// A refused or broken connection, or a server shutting down, starts the outage at once. A timeout does not by itself: a
/// statement that waited on a lock past its command timeout times out on a PostgreSQL that answers (taken for an outage, it
/// was logged as "PostgreSQL is unreachable", then "answers again" 2 s later). Unless an outage is already on, a timeout is
/// written as itself and the <see cref="Probe"/> asks PostgreSQL <c>select 1</c> (off the logging thread: <see cref="Holds"/>
/// is called synchronously by a logger); only if that gets no answer does the outage start.
/// </remarks>
/// <param name="interval">The shortest time between two lines about one outage (<see cref="IntervalSetting"/>, 30 s unless given).</param>
internal sealed partial class DatabaseOutageLog(ILogger<DatabaseOutageLog> logger, TimeProvider clock, TimeSpan? interval = null)
{
    /// <summary>The setting of the shortest time between two lines about one outage.</summary>
    public const string IntervalSetting = "Messaging:OutageLogInterval";

    /// <summary>Its default.</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(30);

    private readonly TimeSpan _interval = interval ?? DefaultInterval;

    /// <summary>
    /// How long after an outage's end a message put back during it may still be logged as put back: the rule asked
    /// PostgreSQL (within <see cref="DatabaseOutages.ProbeTimeout"/>), got no answer, then paused (at most
    /// <see cref="DatabaseOutages.MaxPause"/>) before it put the message back.
    /// </summary>
    public static readonly TimeSpan WaitsOutlast = DatabaseOutages.MaxPause + DatabaseOutages.ProbeTimeout;

    private readonly Lock _lock = new();
    private bool _away;
    private DateTimeOffset? _ended;
    private DateTimeOffset _since;
    private DateTimeOffset _lastLine;
    private long _held;
    private long _heldInAll;
    private Exception? _suspect;
    private long _stalledSinceTicks; // UTC ticks, 0 when not stalled; read without the lock (by every request)

    /// <summary>Whether an outage is on (logged, not yet seen to end).</summary>
    public bool Away
    {
        get
        {
            lock (_lock)
            {
                return _away;
            }
        }
    }

    /// <summary>Whether a timeout, with no outage on, waits for the <see cref="Probe"/> to tell whether PostgreSQL answers.</summary>
    public bool Suspected
    {
        get
        {
            lock (_lock)
            {
                return _suspect is not null;
            }
        }
    }

    /// <summary>
    /// Since when PostgreSQL has left the <see cref="Probe"/>'s <c>select 1</c> without an answer in time (a server that takes
    /// connections but does not answer, or no connection to be had), with no answer since; null while it answers, refuses
    /// connections (then every statement fails at once anyway) or nothing made the probe look. Requests to the API are
    /// refused at once meanwhile (<see cref="DatabaseAwayGate"/>): each waited a minute (its command timeout, then Npgsql's
    /// cancel request) and held a thread of the pool for it.
    /// </summary>
    public DateTimeOffset? StalledSince
        => Volatile.Read(ref _stalledSinceTicks) is var ticks and not 0 ? new DateTimeOffset(ticks, TimeSpan.Zero) : null;

    /// <summary>
    /// Something outside Wolverine's, JasperFx's and Marten's logs met PostgreSQL not answering (readiness's <c>select 1</c>, a
    /// request's statement): unless an outage is on already, the <see cref="Probe"/> asks it and only its answer tells.
    /// Failures PostgreSQL answered (a deadlock, a lock not available) and cancellations are no suspicion.
    /// </summary>
    public void Suspect(Exception failure)
    {
        if (failure is OperationCanceledException || PostgresAnswered(failure))
        {
            return;
        }

        lock (_lock)
        {
            if (!_away)
            {
                _suspect ??= failure;
            }
        }
    }

    /// <summary>
    /// Whether an entry of Wolverine's, JasperFx's or Marten's with <paramref name="exception"/> is about the database being away: then
    /// the outage is logged (when it starts, or at most once per interval) and the entry is to be written at Debug.
    /// A timeout with no outage on is not (yet): the <see cref="Probe"/> tells.
    /// </summary>
    public bool Holds(Exception? exception)
    {
        if (exception is null || !DatabaseOutages.IsDatabaseAway(exception) || PostgresAnswered(exception))
        {
            return false;
        }

        var now = clock.GetUtcNow();
        lock (_lock)
        {
            if (!_away)
            {
                if (TimedOut(exception))
                {
                    _suspect ??= exception;
                    return false;
                }

                Start(exception, now);
                return true;
            }

            _held++;
            _heldInAll++;
            if (now - _lastLine >= _interval)
            {
                LogLasting(logger, (long)(now - _since).TotalSeconds, _held, exception.Message);
                (_lastLine, _held) = (now, 0);
            }
        }

        return true;
    }

    /// <summary>
    /// Whether Wolverine's line for a message put back to wait for a database that did not answer (it carries no exception)
    /// is held: while an outage is on (counted with the entries held back), and for <see cref="WaitsOutlast"/> after it
    /// ended, when a message put back during it may still come; otherwise it is written as it is.
    /// </summary>
    public bool HoldsWait()
    {
        var now = clock.GetUtcNow();
        lock (_lock)
        {
            if (!_away)
            {
                return _ended is { } ended && now - ended <= WaitsOutlast;
            }

            _held++;
            _heldInAll++;
            return true;
        }
    }

    private void Start(Exception exception, DateTimeOffset now)
    {
        (_away, _since, _lastLine, _held, _heldInAll, _suspect) = (true, now, now, 0, 0, null);
        LogStarted(logger, exception.GetType().Name, exception.Message, _interval.TotalSeconds);
    }

    /// <summary>
    /// A deadlock or a serialization failure (SQLSTATE class 40), a lock not available (class 55: a lock timeout, an object in
    /// use): transient for the retry rules, but PostgreSQL answered. Written as itself: taken for an outage it was logged as
    /// "PostgreSQL is unreachable", then "answers again" 2 s later.
    /// </summary>
    private static bool PostgresAnswered(Exception exception)
        => exception.InChain(e => e is PostgresException postgres
            && (postgres.SqlState.StartsWith("40", StringComparison.Ordinal) || postgres.SqlState.StartsWith("55", StringComparison.Ordinal)));

    /// <summary>
    /// Npgsql's command or connection timeout (its <see cref="NpgsqlException"/> over a <see cref="TimeoutException"/>): a
    /// statement that waited on a lock, or a server that does not answer; only <c>select 1</c> tells which.
    /// </summary>
    private static bool TimedOut(Exception exception) => exception.InChain(e => e is TimeoutException);

    /// <summary>
    /// PostgreSQL did not answer the <see cref="Probe"/> (<paramref name="failure"/> says why): a timeout seen meanwhile was the
    /// outage's start; <see cref="StalledSince"/> holds while no answer comes in time, and ends when it answers or refuses.
    /// </summary>
    public void Unanswered(Exception failure)
    {
        var now = clock.GetUtcNow();
        var stalled = TimedOut(failure);
        lock (_lock)
        {
            if (!stalled || _stalledSinceTicks == 0)
            {
                Volatile.Write(ref _stalledSinceTicks, stalled ? now.UtcTicks : 0);
            }

            if (!_away && _suspect is { } timeout)
            {
                Start(timeout, now);
            }
        }
    }

    /// <summary>
    /// PostgreSQL answered: the outage, if one was on, is over (logged once); a timeout seen meanwhile was not one; requests
    /// are taken again.
    /// </summary>
    public void Answered()
    {
        var now = clock.GetUtcNow();
        lock (_lock)
        {
            _suspect = null;
            Volatile.Write(ref _stalledSinceTicks, 0);
            if (!_away)
            {
                return;
            }

            (_away, _ended) = (false, now);
            LogEnded(logger, (long)(now - _since).TotalSeconds, _heldInAll);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "PostgreSQL is unreachable ({ErrorType}: {Error}): the entries of Wolverine and of Marten about it are written at Debug while it lasts; a line every {Seconds} s says it goes on")]
    private static partial void LogStarted(ILogger logger, string errorType, string error, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "PostgreSQL is still unreachable after {Seconds} s ({Held} entries of Wolverine's and Marten's about it held back since the last line; {Error})")]
    private static partial void LogLasting(ILogger logger, long seconds, long held, string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "PostgreSQL answers again after an outage of about {Seconds} s ({Held} entries of Wolverine's and Marten's about it written at Debug)")]
    private static partial void LogEnded(ILogger logger, long seconds, long held);

    /// <summary>
    /// While an outage is on, or a timeout has been seen, asks PostgreSQL <c>select 1</c> every few seconds: to log the
    /// outage's end, or to tell whether the timeout was its start.
    /// </summary>
    internal sealed class Probe(DatabaseOutageLog outages, IDocumentStore store, TimeProvider clock) : BackgroundService
    {
        private static readonly TimeSpan Every = TimeSpan.FromSeconds(2);

        /// <summary>One probe, if one is wanted.</summary>
        internal async Task CheckAsync(CancellationToken cancellationToken)
        {
            if (!outages.Away && !outages.Suspected)
            {
                return;
            }

            if (await DatabaseOutages.FailureAsync(store, cancellationToken) is not { } failure)
            {
                outages.Answered();
            }
            else if (!cancellationToken.IsCancellationRequested)
            {
                outages.Unanswered(failure);
            }
        }

        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            using var timer = new PeriodicTimer(Every, clock);
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                await CheckAsync(stoppingToken);
            }
        }
    }
}
