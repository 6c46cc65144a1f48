using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace ModularChat.BuildingBlocks.Background;

/// <summary>
/// Runs CPU-bound background work (summarizing, ranking) on a few dedicated threads that the operating system schedules
/// below the service's other threads: on Linux each thread takes the lowest priority (nice 19), so when requests want
/// the cores, the background work waits instead of adding to their latency; when the process is otherwise idle it runs
/// at full speed. Elsewhere the threads use <see cref="ThreadPriority.Lowest"/>.
/// </summary>
/// <remarks>
/// The priority orders the threads of this process only, not this process against PostgreSQL: Linux first shares the
/// cores between scheduling groups (a container's cgroup; with <c>kernel.sched_autogroup_enabled</c>, each session, and
/// every PostgreSQL backend is a session of its own), and only then by priority inside a group.
/// </remarks>
public sealed class LowPriorityCpu : IDisposable
{
    private const int PrioProcess = 0;
    private const int LowestNice = 19;

    private readonly BlockingCollection<Action> _queue = new();

    /// <param name="threads">Work items run at once.</param>
    /// <param name="name">Thread name prefix (seen in dumps and profilers).</param>
    public LowPriorityCpu(int threads, string name)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        for (var i = 0; i < threads; i++)
        {
            new Thread(Run) { IsBackground = true, Name = $"{name}-{i}" }.Start();
        }
    }

    /// <summary>True when the threads could be given a lower priority than normal on this system.</summary>
    public bool Lowered { get; private set; }

    /// <summary>Runs <paramref name="work"/> on one of the low-priority threads.</summary>
    public Task<T> RunAsync<T>(Func<T> work, CancellationToken cancellationToken)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (_queue.IsAddingCompleted)
        {
            return Task.FromException<T>(new ObjectDisposedException(nameof(LowPriorityCpu)));
        }

        _queue.Add(() =>
        {
            if (cancellationToken.IsCancellationRequested)
            {
                done.TrySetCanceled(cancellationToken);
                return;
            }

            try
            {
                done.TrySetResult(work());
            }
            catch (OperationCanceledException e)
            {
                done.TrySetCanceled(e.CancellationToken);
            }
            catch (Exception e)
            {
                done.TrySetException(e);
            }
        });
        return done.Task;
    }

    public void Dispose() => _queue.CompleteAdding();

    private void Run()
    {
        Lowered = LowerThisThread();
        foreach (var work in _queue.GetConsumingEnumerable())
        {
            work();
        }
    }

    private static bool LowerThisThread()
    {
        try
        {
            if (OperatingSystem.IsLinux())
            {
                // Linux schedules threads as tasks: setpriority on the thread id changes this thread only.
                return setpriority(PrioProcess, gettid(), LowestNice) == 0;
            }

            Thread.CurrentThread.Priority = ThreadPriority.Lowest;
            return true;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException or PlatformNotSupportedException)
        {
            return false;
        }
    }

    // DllImport rather than LibraryImport: two plain int calls need no marshalling code (nor unsafe blocks).
#pragma warning disable SYSLIB1054
    [DllImport("libc", SetLastError = true)]
    private static extern int setpriority(int which, int who, int priority);

    [DllImport("libc")]
    private static extern int gettid();
#pragma warning restore SYSLIB1054
}
