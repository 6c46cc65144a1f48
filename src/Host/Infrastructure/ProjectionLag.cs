using System.Collections.Frozen;
using System.Diagnostics.Metrics;
using Marten;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Telemetry;
using Npgsql;

namespace ModularChat.Host.Infrastructure;

internal static class ProjectionLagSetup
{
    /// <summary>
    /// The projections' lag gauge, stall warning and readiness check of a node (<see cref="ProjectionLagMonitor"/>,
    /// <see cref="ProjectionStallHealthCheck"/>).
    /// </summary>
    public static IServiceCollection AddProjectionLagMonitor(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSingleton(ProjectionLagSettings.From(configuration));
        services.AddSingleton<ProjectionLagMonitor>();
        services.AddHostedService(sp => sp.GetRequiredService<ProjectionLagMonitor>());
        services.AddHealthChecks().AddCheck<ProjectionStallHealthCheck>(
            ProjectionStallHealthCheck.Name, failureStatus: HealthStatus.Degraded, tags: [HealthSetup.Ready]);
        return services;
    }
}

/// <summary>The settings of <see cref="ProjectionLagMonitor"/>: how often it looks, and after how long a projection behind that does not move is reported.</summary>
internal sealed record ProjectionLagSettings(TimeSpan Interval, TimeSpan StallWarning)
{
    public const string IntervalSetting = "Messaging:ProjectionLagInterval";
    public const string StallWarningSetting = "Messaging:ProjectionStallWarning";

    /// <summary>The settings from <paramref name="configuration"/>: a zero or negative one refuses the start, naming it.</summary>
    public static ProjectionLagSettings From(IConfiguration configuration) => new(
        PersistenceSetup.Positive(configuration, IntervalSetting, TimeSpan.FromSeconds(30)),
        PersistenceSetup.Positive(configuration, StallWarningSetting, TimeSpan.FromMinutes(5)));
}

/// <summary>
/// How far each asynchronous projection (search indexing: <c>SearchEntries:All</c>) is behind the event store, looked at
/// every <c>Messaging:ProjectionLagInterval</c>: the gauge <c>modularchat.projections.lag</c> (the events appended that it
/// has not read, by <c>projection</c>), one warning when a projection behind has not moved for
/// <c>Messaging:ProjectionStallWarning</c>, and one line at Information when it moves again. A projection stops for good
/// when its daemon fails with an error Wolverine does not restart (ProgressionProgressOutOfOrderException, when two
/// daemons ran it), and pauses while no node runs it (its node killed, until another takes it over): before, that showed
/// only as search results that stayed behind and retention steps that waited for it.
/// </summary>
/// <remarks>
/// While one stands still, the node's readiness (<c>/health/ready</c>) is Degraded (<see cref="ProjectionStallHealthCheck"/>):
/// still 200, so that no load balancer takes nodes out of service because search indexing stopped.
/// Behind means below the last event committed (not the daemon's high-water mark, which stops too when no daemon runs).
/// Each node looks for itself: the figures are the database's, the same on every node. It reads two small things (the
/// projections' progress rows and the largest event sequence) and goes on while the node stops, as the node's other gauges.
/// </remarks>
internal sealed partial class ProjectionLagMonitor : PeriodicLook
{
    private readonly IDocumentStore _store;
    private readonly ProjectionLagSettings _settings;
    private readonly TimeProvider _clock;
    private readonly ILogger<ProjectionLagMonitor> _logger;
    private readonly Dictionary<string, Shard> _shards = new(StringComparer.Ordinal);
    private FrozenDictionary<string, long> _lags = FrozenDictionary<string, long>.Empty;
    private FrozenSet<string> _stalled = FrozenSet<string>.Empty;

    public ProjectionLagMonitor(IDocumentStore store, ProjectionLagSettings settings, IMeterFactory meters, TimeProvider clock, ILogger<ProjectionLagMonitor> logger)
        : base(settings.Interval, clock, logger, "Reading the projections' progress")
    {
        _store = store;
        _settings = settings;
        _clock = clock;
        _logger = logger;
        meters.Create(ModularChatTelemetry.SourceName).CreateObservableGauge(
            MetricNames.ProjectionLag,
            () => Volatile.Read(ref _lags).Select(l => new Measurement<long>(l.Value, new KeyValuePair<string, object?>("projection", l.Key))),
            unit: "{event}",
            description: "Events appended that the asynchronous projection (search indexing) has not read yet, by projection");
    }

    /// <summary>The projections behind that have stood still for <c>Messaging:ProjectionStallWarning</c> at the last look.</summary>
    public IReadOnlySet<string> Stalled => Volatile.Read(ref _stalled);

    protected override async Task LookAsync(CancellationToken cancellationToken)
    {
        var (_, projections) = await DaemonProgress.ReadEachAsync(_store, cancellationToken);
        long lastEvent;
        await using (var connection = _store.Storage.Database.CreateConnection())
        {
            await connection.OpenAsync(cancellationToken);
            await using var command = new NpgsqlCommand($"select coalesce(max(seq_id), 0) from {_store.Options.Schema.ForEvents()}", connection);
            lastEvent = Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
        }

        var now = _clock.GetTimestamp();
        var lags = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var (name, read) in projections)
        {
            var lag = Math.Max(0, lastEvent - read);
            lags[name] = lag;
            if (!_shards.TryGetValue(name, out var shard) || shard.Read != read || lag == 0)
            {
                if (shard is { Reported: true })
                {
                    LogMovedAgain(_logger, name, read, lag);
                }

                _shards[name] = new Shard(read, now, Reported: false);
                continue;
            }

            var still = _clock.GetElapsedTime(shard.Since, now);
            if (!shard.Reported && still >= _settings.StallWarning)
            {
                LogStalled(_logger, name, lag, still, read);
                _shards[name] = shard with { Reported = true };
            }
        }

        Volatile.Write(ref _lags, lags.ToFrozenDictionary(StringComparer.Ordinal));
        Volatile.Write(ref _stalled, _shards.Where(s => s.Value.Reported && lags.ContainsKey(s.Key)).Select(s => s.Key).ToFrozenSet(StringComparer.Ordinal));
    }

    /// <summary>What a projection had read at the last look, since when it has stood there, and whether that was reported.</summary>
    private sealed record Shard(long Read, long Since, bool Reported);

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "The asynchronous projection {Projection} is {Lag} events behind and has not moved for {Still} (it stands at event {Read}; " +
                  "Messaging:ProjectionStallWarning): search indexing, and the retention steps that wait for it, stand still. While no node " +
                  "runs it, one takes it over within Messaging:StaleNodeTimeout; if a node runs it, its daemon failed, and restarting that " +
                  "node starts it again")]
    private static partial void LogStalled(ILogger logger, string projection, long lag, TimeSpan still, long read);

    [LoggerMessage(Level = LogLevel.Information, Message = "The asynchronous projection {Projection} moves again (at event {Read}, {Lag} behind)")]
    private static partial void LogMovedAgain(ILogger logger, string projection, long read, long lag);
}

/// <summary>
/// The readiness check <c>projections</c>: Degraded while an asynchronous projection behind stands still
/// (<see cref="ProjectionLagMonitor.Stalled"/>), Healthy otherwise. It reads the monitor's last look, no database.
/// </summary>
internal sealed class ProjectionStallHealthCheck(ProjectionLagMonitor monitor) : IHealthCheck
{
    public const string Name = "projections";

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var stalled = monitor.Stalled;
        return Task.FromResult(stalled.Count == 0
            ? HealthCheckResult.Healthy()
            : new HealthCheckResult(context.Registration.FailureStatus,
                $"Asynchronous projections behind have not moved for Messaging:ProjectionStallWarning ({string.Join(", ", stalled.Order(StringComparer.Ordinal))}): " +
                "search indexing stands still; see the service's log."));
    }
}
