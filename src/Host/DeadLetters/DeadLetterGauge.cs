using System.Collections.Frozen;
using System.Diagnostics.Metrics;
using Marten;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Host.Infrastructure;
using Npgsql;

namespace ModularChat.Host.DeadLetters;

/// <summary>
/// The gauge <c>modularchat.dead_letters</c>: the messages waiting in the dead-letter store (failed for good, no replay
/// requested), by <c>message_type</c>, looked at every <c>Messaging:DeadLetterCountInterval</c>, the figure to alert on (the
/// modules' failure counters say when letters arrive, not how many wait). A type once seen stays at 0 when its letters are
/// gone, so an alert on it resolves. Each node looks for itself: the figures are the database's, the same on every node.
/// </summary>
internal sealed class DeadLetterGauge : PeriodicLook
{
    public const string IntervalSetting = "Messaging:DeadLetterCountInterval";

    /// <summary>A node's gauge, its interval read now: a zero or negative one refuses the start, naming it.</summary>
    public static IServiceCollection AddDeadLetterGauge(IServiceCollection services, IConfiguration configuration)
    {
        var interval = PersistenceSetup.Positive(configuration, IntervalSetting, TimeSpan.FromSeconds(30));
        return services.AddHostedService(sp => ActivatorUtilities.CreateInstance<DeadLetterGauge>(sp, interval));
    }

    private readonly IDocumentStore _store;
    private FrozenDictionary<string, long> _counts = FrozenDictionary<string, long>.Empty;

    public DeadLetterGauge(IDocumentStore store, TimeSpan interval, IMeterFactory meters, TimeProvider clock, ILogger<DeadLetterGauge> logger)
        : base(interval, clock, logger, "Counting the dead letters")
    {
        _store = store;
        meters.Create(ModularChatTelemetry.SourceName).CreateObservableGauge(
            MetricNames.DeadLetters,
            () => Volatile.Read(ref _counts).Select(c => new Measurement<long>(c.Value, new KeyValuePair<string, object?>("message_type", c.Key))),
            unit: "{message}",
            description: "Messages waiting in the dead-letter store (failed for good, no replay requested), by message type");
    }

    protected override async Task LookAsync(CancellationToken cancellationToken)
    {
        await using var connection = _store.Storage.Database.CreateConnection();
        await connection.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            $"select message_type, count(*) from {_store.Options.DatabaseSchemaName}.wolverine_dead_letters where replayable is not true group by message_type",
            connection);
        var counts = Volatile.Read(ref _counts).ToDictionary(c => c.Key, _ => 0L, StringComparer.Ordinal);
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                counts[reader.GetString(0)] = reader.GetInt64(1);
            }
        }

        Volatile.Write(ref _counts, counts.ToFrozenDictionary(StringComparer.Ordinal));
    }
}
