using System.Text.Json;
using Xunit;

namespace ModularChat.Testing;

/// <summary>Polls until a condition holds (background work, queues), failing with the last value seen.</summary>
public static class Eventually
{
    /// <summary>
    /// The deadline for what a request sets off through Wolverine's queues and Marten's daemon, in one step or several (a
    /// summary, the retention step after it, search indexing, the purges after a deletion). Passing tests never wait it
    /// out. With every test assembly at once on two busy cores (as CI once ran them) a summary came 42 s after its append:
    /// extractive merges run at the lowest CPU priority (LowPriorityCpu, nice 19), which is what they get least of then.
    /// </summary>
    public const int BackgroundSeconds = 120;

    /// <param name="seconds">
    /// How long to wait before failing. Where the wait is no bound of the behaviour under test, be generous: a passing test
    /// never waits it out, and on a busy CI machine (several test projects at once on two cores, other jobs besides) work
    /// that takes a second here took 20 s and more: TelemetryExportTests' 20 s failed there, and Search's 60 s for
    /// indexing failed here under heavy load. A bound that is part of the behaviour (a cancellation before the model would
    /// have answered) stays tight.
    /// </param>
    /// <param name="what">What is awaited, for the failure message.</param>
    public static async Task<T> Until<T>(Func<Task<T>> read, Func<T, bool> done, int seconds = BackgroundSeconds, string? what = null)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (true)
        {
            var value = await read();
            if (done(value))
            {
                return value;
            }

            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"{what ?? "Not done"} after {seconds} s; last value: {JsonSerializer.Serialize(value, HttpApi.Json)}");
            }

            await Task.Delay(100);
        }
    }
}
