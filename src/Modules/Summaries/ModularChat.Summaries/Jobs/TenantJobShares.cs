using Microsoft.Extensions.Options;

namespace ModularChat.Summaries.Jobs;

/// <summary>
/// Each tenant's share of this node's summary job slots (<see cref="SummariesOptions.MaxJobsPerTenant"/>): which jobs of each
/// tenant run here now, and which were put off because it ran its share. Node-local and exact: a job counts from
/// <see cref="Enter"/> to the disposal of its <see cref="TenantTurn"/> (in a <c>using</c>, whatever ends the job).
/// </summary>
/// <remarks>
/// <para>While a tenant's jobs are slow (one of them has run for <see cref="SummariesOptions.TenantShareRecheck"/> or longer,
/// or its last one here did), its jobs put off go first, oldest first: a job starts only if a place of its tenant is free
/// after one is kept for each of its tenant's jobs put off before it that is due back within a recheck. Without that, the job
/// queued right behind a finished one in its slot (a partition is a sequential queue, a conversation always in the same one)
/// would take the place every time: the slow tenant's backlog would run back to back in the slots it holds, another
/// tenant's job queued there would wait for all of it, and the slow tenant's jobs in the other slots, put off again and
/// again, might never run (a rebuild, the rest of a long backlog). A tenant whose jobs are quick gets no such order:
/// keeping a place until a job put off comes back (Wolverine polls scheduled jobs every 5 s) would cost more than its jobs,
/// and another tenant waits little behind them; there a job put off for longer than <see cref="SummariesOptions.JobTimeout"/>
/// has the next place. The time of the first deferral travels with the job
/// (<see cref="SummarizeConversation.DeferredSince"/>): a job keeps its place in the line across deferrals, and on the node
/// that runs it next.</para>
/// <para>A job put off comes back after a recheck delay that grows with the number of its tenant's jobs put off before it
/// (<see cref="SummariesOptions.TenantShareRecheck"/> times 1 + those / the share, at most <see cref="MaxRecheck"/>): the
/// first ones of the line look again soon, the last ones rarely, so a tenant with thousands of jobs waiting reschedules a few
/// a second, not thousands every recheck.</para>
/// </remarks>
public sealed class TenantJobShares
{
    /// <summary>The longest recheck delay of a job put off for its tenant's share.</summary>
    public static readonly TimeSpan MaxRecheck = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How long after its recheck time a job put off is still expected back: Wolverine moves scheduled jobs to the queue at
    /// its polling interval (5 s). Past this the node forgets it and keeps no place for it (it went to another node, waits
    /// behind a long job in its slot, or its conversation was deleted); coming back later, it is remembered again with its
    /// own first deferral.
    /// </summary>
    public static readonly TimeSpan ReturnGrace = TimeSpan.FromSeconds(10);

    private readonly Lock _lock = new();
    private readonly Dictionary<string, Tenant> _tenants = new(StringComparer.Ordinal);
    private readonly TimeProvider _clock;
    private readonly int _share;
    private readonly TimeSpan _recheck;
    private readonly TimeSpan _firstClaimAfter;
    private DateTimeOffset _forgotten = DateTimeOffset.MinValue;

    public TenantJobShares(IOptions<SummariesOptions> options, TimeProvider clock)
    {
        var o = options.Value;
        _clock = clock;
        _share = o.EffectiveMaxJobsPerTenant;
        Limited = _share < o.JobParallelism;
        _recheck = o.TenantShareRecheck;
        _firstClaimAfter = o.JobTimeout;
    }

    /// <summary>False when the share is the whole node (one slot, or <c>MaxJobsPerTenant</c> at <c>JobParallelism</c>): every job starts.</summary>
    public bool Limited { get; }

    /// <summary>The jobs of one tenant that may run at once on this node.</summary>
    public int Share => _share;

    /// <summary>
    /// A job of <paramref name="tenant"/> about <paramref name="conversation"/> wants to start: it starts (and counts until the
    /// turn is disposed) unless its tenant runs its share here, or the free places are kept for its tenant's jobs put off
    /// before it; else the turn says how long it puts itself off.
    /// </summary>
    /// <param name="deferredSince">When the job was first put off for its tenant's share (null: never).</param>
    public TenantTurn Enter(string tenant, Guid conversation, DateTimeOffset? deferredSince)
    {
        if (!Limited)
        {
            return TenantTurn.Unlimited;
        }

        var now = _clock.GetUtcNow();
        lock (_lock)
        {
            ForgetLapsed(now);
            if (!_tenants.TryGetValue(tenant, out var t))
            {
                t = new Tenant();
                _tenants[tenant] = t;
            }

            var since = deferredSince is { } d && d < now ? d : now;
            var slow = t.LastDuration >= _recheck || t.Started.Exists(s => now - s >= _recheck);
            int ahead = 0, kept = 0;
            foreach (var (other, waiter) in t.Waiting)
            {
                if (other != conversation && IsBefore(waiter.Since, other, since, conversation))
                {
                    ahead++;
                    if (waiter.Due <= now + _recheck && (slow || (kept == 0 && waiter.Since <= now - _firstClaimAfter)))
                    {
                        kept++;
                    }
                }
            }

            if (t.Started.Count + kept < _share)
            {
                t.Started.Add(now);
                t.Waiting.Remove(conversation);
                return new TenantTurn(this, tenant, now, t.Started.Count, t.Waiting.Count);
            }

            var delay = _recheck * (1 + (ahead / _share));
            if (delay > MaxRecheck)
            {
                delay = _recheck > MaxRecheck ? _recheck : MaxRecheck;
            }

            t.Waiting[conversation] = new Waiter(since, now + delay);
            return new TenantTurn(delay, since, t.Started.Count, t.Waiting.Count);
        }
    }

    /// <summary>The jobs of <paramref name="tenant"/> running on this node now.</summary>
    public int Running(string tenant)
    {
        lock (_lock)
        {
            return _tenants.TryGetValue(tenant, out var t) ? t.Started.Count : 0;
        }
    }

    internal void Leave(string tenant, DateTimeOffset started)
    {
        var now = _clock.GetUtcNow();
        lock (_lock)
        {
            if (_tenants.TryGetValue(tenant, out var t) && t.Started.Remove(started))
            {
                t.LastDuration = now - started;
                if (t.Started.Count == 0 && t.Waiting.Count == 0)
                {
                    _tenants.Remove(tenant);
                }
            }
        }
    }

    /// <summary>Earlier first deferral first; the conversation id orders jobs put off at the same instant.</summary>
    private static bool IsBefore(DateTimeOffset since, Guid id, DateTimeOffset otherSince, Guid otherId)
        => since < otherSince || (since == otherSince && id.CompareTo(otherId) < 0);

    /// <summary>Forgets the jobs put off that did not come back in time (every tenant's, at most once a second).</summary>
    private void ForgetLapsed(DateTimeOffset now)
    {
        if (now - _forgotten < TimeSpan.FromSeconds(1))
        {
            return;
        }

        _forgotten = now;
        List<string>? idle = null;
        foreach (var (tenant, t) in _tenants)
        {
            List<Guid>? lapsed = null;
            foreach (var (conversation, waiter) in t.Waiting)
            {
                if (waiter.Due + ReturnGrace < now)
                {
                    (lapsed ??= []).Add(conversation);
                }
            }

            lapsed?.ForEach(c => t.Waiting.Remove(c));
            if (t.Started.Count == 0 && t.Waiting.Count == 0)
            {
                (idle ??= []).Add(tenant);
            }
        }

        idle?.ForEach(tenant => _tenants.Remove(tenant));
    }

    private sealed class Tenant
    {
        /// <summary>When each of the tenant's running jobs started.</summary>
        public readonly List<DateTimeOffset> Started = [];

        /// <summary>How long the tenant's last job that ended here ran.</summary>
        public TimeSpan LastDuration;

        /// <summary>The tenant's jobs put off and expected back, by conversation (a conversation's jobs never run at once).</summary>
        public readonly Dictionary<Guid, Waiter> Waiting = [];
    }

    private readonly record struct Waiter(DateTimeOffset Since, DateTimeOffset Due);
}

/// <summary>
/// A job's place among its tenant's running jobs (<see cref="Started"/>; disposing it gives the place back, once), or its
/// deferral: <see cref="Delay"/> before it looks again, keeping <see cref="Since"/> as its first deferral.
/// </summary>
public sealed class TenantTurn : IDisposable
{
    internal static readonly TenantTurn Unlimited = new(TimeSpan.Zero, default, 0, 0) { Started = true };

    private readonly TenantJobShares? _shares;
    private readonly string? _tenant;
    private readonly DateTimeOffset _started;
    private int _left;

    internal TenantTurn(TenantJobShares shares, string tenant, DateTimeOffset started, int running, int waiting)
    {
        (_shares, _tenant, _started, Started, Running, Waiting) = (shares, tenant, started, true, running, waiting);
    }

    internal TenantTurn(TimeSpan delay, DateTimeOffset since, int running, int waiting)
    {
        (Delay, Since, Running, Waiting) = (delay, since, running, waiting);
    }

    public bool Started { get; private init; }

    /// <summary>How long a job put off waits before it looks again.</summary>
    public TimeSpan Delay { get; }

    /// <summary>When a job put off was first put off.</summary>
    public DateTimeOffset Since { get; }

    /// <summary>The tenant's jobs running on this node (this one included when it started).</summary>
    public int Running { get; }

    /// <summary>The tenant's jobs put off that this node expects back (this one included when it was put off).</summary>
    public int Waiting { get; }

    public void Dispose()
    {
        if (_shares is not null && Interlocked.Exchange(ref _left, 1) == 0)
        {
            _shares.Leave(_tenant!, _started);
        }
    }
}
