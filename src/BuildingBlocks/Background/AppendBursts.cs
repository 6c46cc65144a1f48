using System.Diagnostics.Metrics;
using FluentValidation;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Options;
using ModularChat.BuildingBlocks.Telemetry;

namespace ModularChat.BuildingBlocks.Background;

/// <summary>When background work steps aside for a burst of appends (configuration section <c>Background</c>).</summary>
public sealed class BackgroundOptions
{
    public const string Section = "Background";

    /// <summary>
    /// Messages appended on this node in the last second from which the node counts as ingesting a burst (a bulk import:
    /// batches), and background work that can wait (search indexing, embedding, automatic summaries) waits for the burst to end. 0: never.
    /// The default is above what single chat appends reach, so live chat traffic is indexed as it comes.
    /// </summary>
    public int YieldAboveMessagesPerSecond { get; set; } = 5000;

    /// <summary>
    /// How far behind the appends background work may fall while it waits for a burst: work older than this runs even
    /// while the burst goes on, so under a long burst the work keeps this lag instead of stopping.
    /// </summary>
    public TimeSpan MaxYieldLag { get; set; } = TimeSpan.FromSeconds(60);
}

internal sealed class BackgroundOptionsValidator : AbstractValidator<BackgroundOptions>
{
    public BackgroundOptionsValidator()
    {
        RuleFor(o => o.YieldAboveMessagesPerSecond).GreaterThanOrEqualTo(0);
        RuleFor(o => o.MaxYieldLag).GreaterThan(TimeSpan.Zero).LessThanOrEqualTo(TimeSpan.FromDays(1));
    }
}

/// <summary>
/// The rate at which this node appends messages, and the place where background work waits while that rate is a
/// burst. The write path reports every commit (<see cref="Record"/>); work that can be done later (indexing what was
/// appended) calls <see cref="YieldAsync"/> before each piece, with the age of the oldest thing it is about to do.
/// </summary>
/// <remarks>
/// Background work and appends share the cores and PostgreSQL. During a bulk import the indexing would run flat out
/// beside it and fall behind anyway; stepping aside lets the import finish sooner, and the indexing catches up after it,
/// never more than <see cref="BackgroundOptions.MaxYieldLag"/> behind. Two rates count: this node's own (immediate), and the
/// cluster's, sampled every second from the event store by the Conversations module, so that the node running the
/// projections also steps aside for an import served by another node.
/// </remarks>
public sealed class AppendBursts
{
    private const int Buckets = 10;
    private static readonly TimeSpan Bucket = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(100);

    private readonly TimeProvider _clock;
    private readonly BackgroundOptions _options;
    private readonly Counter<double> _yielded;
    private readonly long[] _counts = new long[Buckets];
    private readonly long[] _slots = new long[Buckets];
    private readonly Lock _gate = new();
    private readonly long _timestampsPerBucket;
    private long _clusterRate;
    private long? _clusterSampledAt;
    private long? _burstSeenAt;

    public AppendBursts(TimeProvider clock, IOptions<BackgroundOptions> options, IMeterFactory meters)
    {
        _clock = clock;
        _options = options.Value;
        _timestampsPerBucket = Math.Max(1, (long)(clock.TimestampFrequency * Bucket.TotalSeconds));
        var meter = meters.Create(ModularChatTelemetry.SourceName);
        _yielded = meter.CreateCounter<double>(MetricNames.BackgroundYield, "s", "Time background work waited for a burst of appends to end, by work");
        meter.CreateObservableGauge(MetricNames.AppendRate, () => MessagesLastSecond, "{message}/s", "Messages appended on this node in the last second");
        meter.CreateObservableGauge(MetricNames.ClusterAppendRate, () => ClusterEventsPerSecond, "{event}/s", "Events the cluster appended per second, as last sampled");
    }

    /// <summary>Messages appended on this node over the last second.</summary>
    public long MessagesLastSecond
    {
        get
        {
            var now = Slot(_clock.GetTimestamp());
            lock (_gate)
            {
                return SumSince(now);
            }
        }
    }

    /// <summary>
    /// Events appended per second by the whole cluster, as last sampled from the event store (see
    /// <see cref="ObserveCluster"/>); 0 when no sample is fresher than <see cref="ClusterSampleLifetime"/>.
    /// </summary>
    public long ClusterEventsPerSecond
    {
        get
        {
            lock (_gate)
            {
                return _clusterSampledAt is { } at && _clock.GetElapsedTime(at) <= ClusterSampleLifetime ? _clusterRate : 0;
            }
        }
    }

    /// <summary>How long a cluster-wide sample counts: a node whose sampling stopped falls back to its own rate.</summary>
    public static readonly TimeSpan ClusterSampleLifetime = TimeSpan.FromSeconds(3);

    /// <summary>
    /// How long work that steps aside (<see cref="YieldAsync"/>, <see cref="ShouldDefer"/>) goes on stepping aside after the
    /// rate last reached the threshold. <see cref="Bursting"/> looks at one second only, so a single commit of an import
    /// that takes a second (on a busy machine: what stepping aside is for) ends it for a moment; a wait that polled in
    /// that moment ended, and the work ran in the middle of the import. Longer than the slowest append seen under test
    /// load (1.8 s on two busy cores); after a real burst the work starts this much later.
    /// </summary>
    public static readonly TimeSpan BurstSettle = TimeSpan.FromSeconds(3);

    /// <summary>
    /// True while this node appends, or the cluster appends events, at <see cref="BackgroundOptions.YieldAboveMessagesPerSecond"/>
    /// or more a second: the node that runs the projections steps aside for an import that another node serves.
    /// </summary>
    public bool Bursting => Reaches(MessagesLastSecond) || Reaches(ClusterEventsPerSecond);

    /// <summary>Records the cluster's append rate, sampled from the event store's sequence.</summary>
    public void ObserveCluster(long eventsPerSecond)
    {
        var now = _clock.GetTimestamp();
        lock (_gate)
        {
            _clusterRate = Math.Max(0, eventsPerSecond);
            _clusterSampledAt = now;
            if (Reaches(_clusterRate))
            {
                _burstSeenAt = now;
            }
        }
    }

    /// <summary>Counts <paramref name="messages"/> just committed.</summary>
    public void Record(int messages)
    {
        var now = _clock.GetTimestamp();
        var slot = Slot(now);
        lock (_gate)
        {
            var i = (int)(slot % Buckets);
            if (_slots[i] != slot)
            {
                _slots[i] = slot;
                _counts[i] = 0;
            }

            _counts[i] += messages;
            if (Reaches(SumSince(slot)))
            {
                _burstSeenAt = now;
            }
        }
    }

    /// <summary>
    /// True while a burst lasts and until <see cref="BurstSettle"/> has passed since the rate last reached the threshold
    /// (a commit or a sample that did): a moment without appends inside an import does not end it.
    /// </summary>
    public bool InBurst
    {
        get
        {
            if (Bursting)
            {
                return true;
            }

            lock (_gate)
            {
                return _burstSeenAt is { } at && _clock.GetElapsedTime(at) < BurstSettle;
            }
        }
    }

    /// <summary>
    /// Waits while a burst lasts, unless or until the oldest pending piece of work, from <paramref name="oldestPending"/>,
    /// is <see cref="BackgroundOptions.MaxYieldLag"/> old. Returns at once when there is no burst.
    /// </summary>
    /// <param name="work">Names the waiting work in the metric.</param>
    /// <returns>How long it waited.</returns>
    public async ValueTask<TimeSpan> YieldAsync(DateTimeOffset oldestPending, string work, CancellationToken cancellationToken)
    {
        if (!InBurst)
        {
            return TimeSpan.Zero;
        }

        var started = _clock.GetTimestamp();
        var due = oldestPending + _options.MaxYieldLag;
        while (InBurst)
        {
            var left = due - _clock.GetUtcNow();
            if (left <= TimeSpan.Zero)
            {
                break;
            }

            await Task.Delay(left < Poll ? left : Poll, _clock, cancellationToken);
        }

        var waited = _clock.GetElapsedTime(started);
        _yielded.Add(waited.TotalSeconds, new KeyValuePair<string, object?>("work", work));
        return waited;
    }

    /// <summary>
    /// For work that puts itself off (a durable job rescheduled) instead of waiting in <see cref="YieldAsync"/>: whether
    /// work that became due at <paramref name="dueSince"/> should step aside now, that is while a burst lasts and until it
    /// is <see cref="BackgroundOptions.MaxYieldLag"/> old. The caller records each deferral with <see cref="RecordDeferral"/>.
    /// </summary>
    public bool ShouldDefer(DateTimeOffset dueSince) => InBurst && _clock.GetUtcNow() < dueSince + _options.MaxYieldLag;

    /// <summary>Counts <paramref name="deferral"/> of <paramref name="work"/> put off for a burst (the same metric as <see cref="YieldAsync"/>).</summary>
    public void RecordDeferral(TimeSpan deferral, string work)
        => _yielded.Add(deferral.TotalSeconds, new KeyValuePair<string, object?>("work", work));

    /// <summary>The number of the 100 ms bucket <paramref name="timestamp"/> falls in, on the monotonic clock.</summary>
    private long Slot(long timestamp) => timestamp / _timestampsPerBucket;

    /// <summary>Messages of the second up to bucket <paramref name="now"/> (under the lock).</summary>
    private long SumSince(long now)
    {
        long sum = 0;
        for (var i = 0; i < Buckets; i++)
        {
            if (now - _slots[i] < Buckets)
            {
                sum += _counts[i];
            }
        }

        return sum;
    }

    /// <summary>Whether <paramref name="rate"/> a second is a burst (never when yielding is off).</summary>
    private bool Reaches(long rate) => _options.YieldAboveMessagesPerSecond > 0 && rate >= _options.YieldAboveMessagesPerSecond;
}

/// <summary>Registration of <see cref="AppendBursts"/>.</summary>
public static class AppendBurstsRegistration
{
    /// <summary>The node's <see cref="AppendBursts"/> and its validated <see cref="BackgroundOptions"/> (once, however often called).</summary>
    public static IServiceCollection AddAppendBursts(this IServiceCollection services)
    {
        if (services.Any(d => d.ServiceType == typeof(AppendBursts)))
        {
            return services;
        }

        services.AddValidatedOptions<BackgroundOptions, BackgroundOptionsValidator>(BackgroundOptions.Section);
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<AppendBursts>();
        return services;
    }
}
