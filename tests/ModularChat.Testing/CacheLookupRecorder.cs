using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Alba;
using Microsoft.Extensions.DependencyInjection;

namespace ModularChat.Testing;

/// <summary>Records the service's cache lookup measurements (modularchat.cache.lookups) while it lives.</summary>
/// <remarks>
/// A <see cref="MeterListener"/> hears every meter of the process: without hosts given, it records the lookups of every
/// host in the process (those of other test collections running meanwhile too). Given hosts, it records only theirs: each
/// host creates its meters through its own <see cref="IMeterFactory"/>, which is the <see cref="Meter.Scope"/> of them.
/// </remarks>
public sealed class CacheLookupRecorder : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentQueue<(string Cache, string Result)> _lookups = new();

    /// <summary>Records the lookups of every host in the process (for a process that runs one deployment, a benchmark's).</summary>
    public CacheLookupRecorder()
        : this((IReadOnlyList<object>?)null)
    {
    }

    /// <summary>Records the lookups of <paramref name="hosts"/> only.</summary>
    public CacheLookupRecorder(params IAlbaHost[] hosts)
        : this(hosts.Select(h => h.Services).ToArray())
    {
    }

    /// <summary>Records the lookups of the hosts whose services are <paramref name="services"/> only.</summary>
    public CacheLookupRecorder(params IServiceProvider[] services)
        : this(Scopes(services))
    {
    }

    private CacheLookupRecorder(IReadOnlyList<object>? scopes)
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "ModularChat" && instrument.Name == "modularchat.cache.lookups"
                && (scopes is null || scopes.Any(scope => ReferenceEquals(scope, instrument.Meter.Scope))))
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

    private static IReadOnlyList<object> Scopes(IServiceProvider[] services)
    {
        if (services.Length == 0)
        {
            throw new ArgumentException("Give the hosts whose lookups to record, or use the constructor without any.", nameof(services));
        }

        return services.Select(s => (object)s.GetRequiredService<IMeterFactory>()).ToArray();
    }

    /// <summary>Forgets what was recorded so far.</summary>
    public void Clear() => _lookups.Clear();

    public void Dispose() => _listener.Dispose();
}
