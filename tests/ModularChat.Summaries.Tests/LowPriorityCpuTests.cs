using ModularChat.BuildingBlocks.Background;

namespace ModularChat.Summaries.Tests;

/// <summary>The low-priority threads that extractive merges run on.</summary>
public sealed class LowPriorityCpuTests
{
    [Fact]
    public async Task Work_runs_on_a_thread_the_OS_schedules_at_the_lowest_priority()
    {
        using var cpu = new LowPriorityCpu(1, "test-low");

        var (name, stat) = await cpu.RunAsync(
            () => (Thread.CurrentThread.Name, OperatingSystem.IsLinux() ? File.ReadAllText("/proc/thread-self/stat") : null), CancellationToken.None);

        Assert.Equal("test-low-0", name);
        Assert.True(cpu.Lowered);
        if (stat is not null)
        {
            // Field 19 of /proc/<tid>/stat is the nice value; the command name (field 2) may hold spaces, so count after its ')'.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            Assert.Equal("19", fields[19 - 3]);
        }
    }

    [Fact]
    public async Task Failures_and_cancellation_reach_the_caller()
    {
        using var cpu = new LowPriorityCpu(1, "test-low");

        await Assert.ThrowsAsync<InvalidOperationException>(() => cpu.RunAsync<int>(() => throw new InvalidOperationException("boom"), CancellationToken.None));
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cpu.RunAsync(() => 1, cancelled.Token));
        Assert.Equal(42, await cpu.RunAsync(() => 42, CancellationToken.None));
    }
}
