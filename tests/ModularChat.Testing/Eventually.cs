using System.Text.Json;
using Xunit;

namespace ModularChat.Testing;

/// <summary>Polls until a condition holds (background work, queues), failing with the last value seen.</summary>
public static class Eventually
{
    /// <param name="what">What is awaited, for the failure message.</param>
    public static async Task<T> Until<T>(Func<Task<T>> read, Func<T, bool> done, int seconds = 60, string? what = null)
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
