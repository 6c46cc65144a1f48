using Microsoft.Extensions.Options;
using ModularChat.Summaries.Jobs;

namespace ModularChat.Summaries.Tests.Unit;

public sealed class TenantJobSharesTests
{
    private static readonly DateTimeOffset T0 = new(2026, 12, 6, 9, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Recheck = TimeSpan.FromSeconds(5);

    private static TenantJobShares Shares(int jobParallelism = 3, int maxJobsPerTenant = 0)
        => new(Options.Create(new SummariesOptions { JobParallelism = jobParallelism, MaxJobsPerTenant = maxJobsPerTenant, TenantShareRecheck = Recheck }));

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
        using var a1 = shares.Enter("a", Guid.NewGuid(), null, T0);
        var a2 = shares.Enter("a", Guid.NewGuid(), null, T0);
        var a3 = shares.Enter("a", Guid.NewGuid(), null, T0);
        using var b1 = shares.Enter("b", Guid.NewGuid(), null, T0);

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
    public void A_place_that_frees_goes_to_the_tenants_job_put_off_before_not_to_the_next_one_that_never_waited()
    {
        var shares = Shares();
        var a1 = shares.Enter("a", Guid.NewGuid(), null, T0);
        using var a2 = shares.Enter("a", Guid.NewGuid(), null, T0);
        var waiting = Guid.NewGuid();
        var first = shares.Enter("a", waiting, null, T0);
        Assert.False(first.Started);

        // The job queued behind a1 in its slot starts at once: it is put off, its slot goes on with other tenants' jobs...
        a1.Dispose();
        var next = shares.Enter("a", Guid.NewGuid(), null, T0 + TimeSpan.FromSeconds(1));
        Assert.False(next.Started);
        Assert.Equal(Recheck, next.Delay);
        using var b = shares.Enter("b", Guid.NewGuid(), null, T0 + TimeSpan.FromSeconds(1));
        Assert.True(b.Started);

        // ...and the job put off first takes the place when it comes back (a little late: Wolverine polls scheduled jobs).
        using var back = shares.Enter("a", waiting, first.Since, T0 + Recheck + TimeSpan.FromSeconds(3));
        Assert.True(back.Started);
        Assert.Equal(2, shares.Running("a"));

        // The one behind it in the line is next.
        Assert.False(shares.Enter("a", Guid.NewGuid(), null, T0 + TimeSpan.FromSeconds(9)).Started);
    }

    [Fact]
    public void Without_a_limit_every_job_starts_and_nothing_is_counted()
    {
        var shares = Shares(jobParallelism: 1);
        for (var i = 0; i < 5; i++)
        {
            Assert.True(shares.Enter("a", Guid.NewGuid(), null, T0).Started);
        }

        Assert.Equal(0, shares.Running("a"));
    }

    [Fact]
    public void The_recheck_grows_with_the_jobs_put_off_before_and_stops_at_five_minutes()
    {
        var shares = Shares();
        using var a1 = shares.Enter("a", Guid.NewGuid(), null, T0);
        using var a2 = shares.Enter("a", Guid.NewGuid(), null, T0);

        var delays = Enumerable.Range(0, 200).Select(i => shares.Enter("a", Guid.NewGuid(), null, T0 + TimeSpan.FromMilliseconds(i)).Delay).ToList();

        // Two places: the first two of the line look again after one recheck, the next two after two, and so on.
        Assert.Equal([Recheck, Recheck, 2 * Recheck, 2 * Recheck, 3 * Recheck], delays.Take(5));
        Assert.Equal(TenantJobShares.MaxRecheck, delays[^1]);

        // A job put off again keeps its place in the line (its first deferral travels with it).
        var again = shares.Enter("a", Guid.NewGuid(), T0 - TimeSpan.FromSeconds(1), T0 + TimeSpan.FromSeconds(5));
        Assert.Equal(Recheck, again.Delay);
        Assert.Equal(T0 - TimeSpan.FromSeconds(1), again.Since);
    }

    [Fact]
    public void A_job_put_off_that_does_not_come_back_is_forgotten_and_keeps_no_place()
    {
        var shares = Shares();
        var a1 = shares.Enter("a", Guid.NewGuid(), null, T0);
        using var a2 = shares.Enter("a", Guid.NewGuid(), null, T0);
        var gone = shares.Enter("a", Guid.NewGuid(), null, T0); // run by another node when it is due
        Assert.False(gone.Started);
        a1.Dispose();

        // Due back within a recheck, it keeps the free place...
        var conversation = Guid.NewGuid();
        var probe = shares.Enter("a", conversation, null, T0 + TimeSpan.FromSeconds(2));
        Assert.False(probe.Started);

        // ...past its recheck and the grace for Wolverine's polling, it is forgotten: the place does not stay empty.
        using var back = shares.Enter("a", conversation, probe.Since, T0 + gone.Delay + TenantJobShares.ReturnGrace + TimeSpan.FromSeconds(1));
        Assert.True(back.Started);
    }
}
