using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using ModularChat.Summaries.Jobs;

namespace ModularChat.Summaries.Tests.Unit;

public sealed class TenantJobSharesTests
{
    private static readonly DateTimeOffset T0 = new(2026, 12, 6, 9, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Recheck = TimeSpan.FromSeconds(5);
    private readonly FakeTimeProvider _clock = new(T0);

    private TenantJobShares Shares(int jobParallelism = 3, int maxJobsPerTenant = 0, TimeSpan? jobTimeout = null)
        => new(Options.Create(new SummariesOptions
        {
            JobParallelism = jobParallelism,
            MaxJobsPerTenant = maxJobsPerTenant,
            TenantShareRecheck = Recheck,
            JobTimeout = jobTimeout ?? TimeSpan.FromMinutes(10),
        }), _clock);

    private TenantTurn At(TimeSpan sinceT0, TenantJobShares shares, string tenant, Guid? conversation = null, DateTimeOffset? deferredSince = null)
    {
        _clock.SetUtcNow(T0 + sinceT0);
        return shares.Enter(tenant, conversation ?? Guid.NewGuid(), deferredSince);
    }

    private static TimeSpan S(double seconds) => TimeSpan.FromSeconds(seconds);

    [Theory]
    [InlineData(3, 0, true, 2)]
    [InlineData(2, 0, true, 1)]
    [InlineData(1, 0, false, 1)]
    [InlineData(3, 3, false, 3)]
    [InlineData(5, 1, true, 1)]
    public void The_share_defaults_to_one_less_than_the_slots_and_the_whole_node_sets_no_limit(int parallelism, int configured, bool limited, int share)
    {
        var shares = Shares(parallelism, configured);
        Assert.Equal(limited, shares.Limited);
        Assert.Equal(share, shares.Share);
    }

    [Fact]
    public void A_tenant_runs_its_share_and_its_next_job_is_put_off_while_other_tenants_start()
    {
        var shares = Shares();
        using var a1 = At(S(0), shares, "a");
        var a2 = At(S(0), shares, "a");
        var a3 = At(S(0), shares, "a");
        using var b1 = At(S(0), shares, "b");

        Assert.True(a1.Started && a2.Started && b1.Started);
        Assert.False(a3.Started);
        Assert.Equal(Recheck, a3.Delay);
        Assert.Equal(T0, a3.Since);
        Assert.Equal(2, shares.Running("a"));

        // Ended (also by an exception or a cancellation: the writer disposes the turn in a using), its place is free; disposed
        // twice, it is given back once.
        a2.Dispose();
        a2.Dispose();
        Assert.Equal(1, shares.Running("a"));
    }

    [Fact]
    public void Without_a_limit_every_job_starts_and_nothing_is_counted()
    {
        var shares = Shares(jobParallelism: 1);
        for (var i = 0; i < 5; i++)
        {
            Assert.True(At(S(0), shares, "a").Started);
        }

        Assert.Equal(0, shares.Running("a"));
    }

    [Fact]
    public void The_recheck_grows_with_the_jobs_put_off_before_and_stops_at_five_minutes()
    {
        var shares = Shares();
        using var a1 = At(S(0), shares, "a");
        using var a2 = At(S(0), shares, "a");

        var delays = Enumerable.Range(0, 200).Select(i => At(TimeSpan.FromMilliseconds(i), shares, "a").Delay).ToList();

        // Two places: the first two of the line look again after one recheck, the next two after two, and so on.
        Assert.Equal([Recheck, Recheck, 2 * Recheck, 2 * Recheck, 3 * Recheck], delays.Take(5));
        Assert.Equal(TenantJobShares.MaxRecheck, delays[^1]);

        // A job put off again keeps its place in the line (its first deferral travels with it).
        var again = At(S(5), shares, "a", deferredSince: T0 - S(1));
        Assert.Equal(Recheck, again.Delay);
        Assert.Equal(T0 - S(1), again.Since);
    }

    [Fact]
    public void While_a_tenants_jobs_are_slow_a_place_that_frees_goes_to_its_job_put_off_before_not_to_the_next_that_never_waited()
    {
        var shares = Shares();
        var a1 = At(S(0), shares, "a");
        using var a2 = At(S(0), shares, "a");
        var waiting = Guid.NewGuid();
        var first = At(S(1), shares, "a", waiting);
        Assert.False(first.Started);

        // a1 ran for longer than a recheck: the job queued behind it in its slot, which never waited, is put off (its slot goes
        // on with other tenants' jobs)...
        _clock.SetUtcNow(T0 + S(5.5));
        a1.Dispose();
        var next = At(S(5.5), shares, "a");
        Assert.False(next.Started);
        using var b = At(S(5.5), shares, "b");
        Assert.True(b.Started);

        // ...and the job put off first takes the place when it comes back (a little late: Wolverine polls scheduled jobs).
        using var back = At(S(8), shares, "a", waiting, first.Since);
        Assert.True(back.Started);
        Assert.Equal(2, shares.Running("a"));
    }

    [Fact]
    public void A_tenant_whose_jobs_are_quick_gives_a_free_place_to_whoever_comes_unless_a_job_waited_past_the_job_timeout()
    {
        var shares = Shares(jobTimeout: TimeSpan.FromMinutes(1));
        var running = new Queue<TenantTurn>([At(S(0), shares, "a"), At(S(0), shares, "a")]);
        var old = Guid.NewGuid();
        var first = At(S(0), shares, "a", old);
        Assert.False(first.Started);

        // Its jobs take two seconds, one ends every second: keeping the place until the job put off comes back would cost more
        // than they do, so the next one takes it, and the job put off finds none free each time it looks.
        for (var t = 1; t < 60; t++)
        {
            _clock.SetUtcNow(T0 + S(t));
            running.Dequeue().Dispose();
            var next = At(S(t), shares, "a");
            Assert.True(next.Started, $"at {t} s");
            running.Enqueue(next);
            if (t % 5 == 0)
            {
                Assert.False(At(S(t), shares, "a", old, first.Since).Started);
            }
        }

        // Put off for longer than the job timeout, it has the next place: a younger job is put off while it is due back.
        _clock.SetUtcNow(T0 + S(61));
        running.Dequeue().Dispose();
        Assert.False(At(S(61), shares, "a").Started);
        using var oldTurn = At(S(62), shares, "a", old, first.Since);
        Assert.True(oldTurn.Started);
    }

    [Fact]
    public void A_job_put_off_that_does_not_come_back_is_forgotten_and_keeps_no_place()
    {
        var shares = Shares();
        var a1 = At(S(0), shares, "a");
        using var a2 = At(S(0), shares, "a");
        var gone = At(S(0), shares, "a"); // run by another node when it is due
        Assert.False(gone.Started);
        _clock.SetUtcNow(T0 + S(6));
        a1.Dispose(); // after 6 s: the tenant's jobs are slow

        // Due back within a recheck, it keeps the free place...
        var conversation = Guid.NewGuid();
        var probe = At(S(6), shares, "a", conversation);
        Assert.False(probe.Started);

        // ...past its recheck and the grace for Wolverine's polling, it is forgotten: the place does not stay empty.
        using var back = At(gone.Delay + TenantJobShares.ReturnGrace + S(1), shares, "a", conversation, probe.Since);
        Assert.True(back.Started);
    }
}
