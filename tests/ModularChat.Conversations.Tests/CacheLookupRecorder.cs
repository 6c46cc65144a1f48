using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace ModularChat.Conversations.Tests;

/// <summary>Records the service's cache lookup measurements (modularchat.cache.lookups) while it lives.</summary>
internal sealed class CacheLookupRecorder : IDisposable
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

    public IReadOnlyList<string> Results(string cache) => _lookups.Where(l => l.Cache == cache).Select(l => l.Result).ToList();

    public void Dispose() => _listener.Dispose();
}
