using System.Globalization;

namespace ModularChat.Benchmarks;

/// <summary>Collects figures and prints them, at the end, one <c>name=value</c> line each.</summary>
internal sealed class Measurements
{
    private readonly List<(string Name, double Value)> _figures = [];

    public void Add(string name, double value)
    {
        _figures.Add((name, value));
        Console.Error.WriteLine($"[bench] {name} = {Format(value)}");
    }

    public void Print()
    {
        foreach (var (name, value) in _figures)
        {
            Console.WriteLine($"{name}={Format(value)}");
        }
    }

    private static string Format(double value) => value.ToString(Math.Abs(value) >= 100 ? "0" : "0.###", CultureInfo.InvariantCulture);
}

/// <summary>Latency samples in milliseconds.</summary>
internal sealed class Latencies
{
    private readonly List<double> _samples = [];
    private readonly Lock _gate = new();

    public int Count { get { lock (_gate) { return _samples.Count; } } }

    public void Add(double milliseconds)
    {
        lock (_gate)
        {
            _samples.Add(milliseconds);
        }
    }

    public void AddAll(Latencies other)
    {
        double[] samples;
        lock (other._gate)
        {
            samples = [.. other._samples];
        }

        lock (_gate)
        {
            _samples.AddRange(samples);
        }
    }

    public double Percentile(double p)
    {
        lock (_gate)
        {
            if (_samples.Count == 0)
            {
                return double.NaN;
            }

            var sorted = _samples.Order().ToArray();
            var index = (int)Math.Ceiling(p / 100.0 * sorted.Length) - 1;
            return sorted[Math.Clamp(index, 0, sorted.Length - 1)];
        }
    }
}

/// <summary>Runs one loop per client for a warm-up then a measured period; counts the operations of the measured one.</summary>
internal static class Load
{
    public static async Task<(double PerSecond, Latencies Latencies)> RunAsync(
        int clients, TimeSpan warmUp, TimeSpan measure, Func<int, Task<int>> operation, Func<Task>? afterWarmUp = null)
    {
        var latencies = new Latencies();
        long completed = 0;
        var measuring = false;
        using var stop = new CancellationTokenSource();
        var workers = Enumerable.Range(0, clients).Select(async client =>
        {
            while (!stop.IsCancellationRequested)
            {
                var started = System.Diagnostics.Stopwatch.GetTimestamp();
                var count = await operation(client);
                if (Volatile.Read(ref measuring) && !stop.IsCancellationRequested)
                {
                    latencies.Add(System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                    Interlocked.Add(ref completed, count);
                }
            }
        }).ToArray();

        await Task.Delay(warmUp);
        if (afterWarmUp is not null)
        {
            await afterWarmUp();
        }

        Volatile.Write(ref measuring, true);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await Task.Delay(measure);
        await stop.CancelAsync();
        var elapsed = clock.Elapsed;
        await Task.WhenAll(workers);
        return (Interlocked.Read(ref completed) / elapsed.TotalSeconds, latencies);
    }
}
