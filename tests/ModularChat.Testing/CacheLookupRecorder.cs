using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace ModularChat.Testing;

/// <summary>Records the service's cache lookup measurements (modularchat.cache.lookups) while it lives.</summary>
public sealed class CacheLookupRecorder : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentQueue<(string Cache, string Result)> _lookups = new();

    public CacheLookupRecorder()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "ModularChat" && instrument.Name == "modularchat.cache.lookups")
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((_, _, tags, _) =>
        {
            string? cache = null, result = null;
            foreach (var tag in tags)
            {
                if (tag.Key == "cache")
                {
                    cache = tag.Value as string;
                }
                else if (tag.Key == "result")
                {
                    result = tag.Value as string;
                }
            }

            _lookups.Enqueue((cache ?? "", result ?? ""));
        });
        _listener.Start();
    }

    /// <summary>The results ("hit", "miss") of <paramref name="cache"/>'s lookups, in order.</summary>
    public IReadOnlyList<string> Results(string cache) => _lookups.Where(l => l.Cache == cache).Select(l => l.Result).ToList();

    /// <summary>Hits and misses of one cache, or of all of them (null).</summary>
    public (long Hits, long Misses) Totals(string? cache)
    {
        var lookups = _lookups.Where(l => cache is null || l.Cache == cache).ToList();
        return (lookups.Count(l => l.Result == "hit"), lookups.Count(l => l.Result == "miss"));
    }

    /// <summary>Forgets what was recorded so far.</summary>
    public void Clear() => _lookups.Clear();

    public void Dispose() => _listener.Dispose();
}
