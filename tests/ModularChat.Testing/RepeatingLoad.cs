namespace ModularChat.Testing;

/// <summary>
/// Background load for tests: runs <c>step</c> (given its number) again and again, with a pause between steps, until
/// disposed; disposing waits for the step under way and rethrows what a step threw.
/// </summary>
public sealed class RepeatingLoad : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private int _steps;

    public RepeatingLoad(Func<int, Task> step, TimeSpan pause)
        => _loop = Task.Run(async () =>
        {
            for (var i = 0; !_stop.IsCancellationRequested; i++)
            {
                await step(i);
                Interlocked.Increment(ref _steps);
                await Task.Delay(pause, CancellationToken.None);
            }
        });

    /// <summary>Steps done so far.</summary>
    public int Steps => Volatile.Read(ref _steps);

    /// <summary>True once the load has ended (disposed, or a step failed).</summary>
    public bool Stopped => _loop.IsCompleted;

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        _stop.Dispose();
    }
}
