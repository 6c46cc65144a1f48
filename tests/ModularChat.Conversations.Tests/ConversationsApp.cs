using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Contracts;
using Npgsql;
using Wolverine;

namespace ModularChat.Conversations.Tests;

/// <summary>The shared host of this assembly, with a probe that records the integration events Wolverine delivers.</summary>
public class ConversationsApp : ModularChatApp
{
    public ConversationsApp()
    {
    }

    /// <param name="databaseName">A database of its own (see <see cref="RetentionApp"/>).</param>
    protected ConversationsApp(string databaseName)
        : base(databaseName)
    {
    }

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        // Small limits so the limit tests need small payloads.
        ["Conversations:MaxContentLength"] = "2000",
        ["Conversations:MaxBatchSize"] = "50",
        ["Limits:MaxRequestBodyBytes"] = "200000",
        // Retention policies for the tenants of RetentionTests (the default stays keep-all).
        [$"Retention:Tenants:{RetentionTenants.Delete}:Policy"] = "delete-after-summary",
        [$"Retention:Tenants:{RetentionTenants.Delete}:KeepLast"] = "5",
        [$"Retention:Tenants:{RetentionTenants.Archive}:Policy"] = "archive-after-summary",
        [$"Retention:Tenants:{RetentionTenants.Archive}:KeepLast"] = "5",
        [$"Retention:Tenants:{RetentionTenants.KeepLast}:Policy"] = "keep-last-n",
        [$"Retention:Tenants:{RetentionTenants.KeepLast}:KeepLast"] = "3",
        [$"Retention:Tenants:{RetentionTenants.Totals}:Policy"] = "delete-after-summary",
        [$"Retention:Tenants:{RetentionTenants.Totals}:KeepLast"] = "5",
        // A conversation that crosses a second milestone within MinInterval gets its next summary job scheduled for then; that
        // job (ids only) stays in the inbox until it runs, also after a deletion. Short here, so the deletion tests can
        // expect an empty inbox soon (the default, a minute, left one behind in 2 of 5 runs when they waited 30 s).
        ["Summaries:MinInterval"] = "00:00:05",
        // Handled messages (which carry content) leave the inbox quickly, for the deletion cascade test.
        ["Messaging:KeepHandledMessagesFor"] = "00:00:01",
        ["Messaging:HandledMessageCleanupInterval"] = "00:00:01",
        ["Messaging:HealthCheckInterval"] = "00:00:07",
        ["Messaging:StaleNodeTimeout"] = "00:00:25",
        ["Messaging:DeadLetterRetention"] = "3.00:00:00",
        // Search tombstones expire quickly too (at least the vector index's idle eviction).
        ["Search:TombstoneLifetime"] = "00:00:02",
        ["Search:VectorIndex:IdleEviction"] = "00:00:01",
    };

    /// <summary>What the hosts log, every level.</summary>
    public CapturedLogs Logs { get; } = new();

    protected override void ConfigureServices(IServiceCollection services)
    {
        services.ConfigureWolverine(o => o.Discovery.IncludeAssembly(typeof(ConversationsApp).Assembly));
        services.AddSingleton<Microsoft.Extensions.Logging.ILoggerProvider>(Logs);
    }

    /// <summary>Waits until <paramref name="count"/> sessions of the test database wait for a lock.</summary>
    public async Task WaitForLockWaiters(int count)
    {
        await using var connection = new NpgsqlConnection(PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'", connection);
        await Eventually.Until(async () => (long)(await command.ExecuteScalarAsync())!, waiters => waiters >= count, seconds: 60,
            what: $"{count} sessions waiting for a lock");
    }

    /// <summary>Counts the stored events of a type in a stream, straight from PostgreSQL.</summary>
    public async Task<long> CountEvents(Guid streamId, string eventType)
    {
        await using var connection = new NpgsqlConnection(PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("select count(*) from modularchat.mt_events where stream_id = @id and type = @type", connection);
        command.Parameters.AddWithValue("id", streamId);
        command.Parameters.AddWithValue("type", eventType);
        return (long)(await command.ExecuteScalarAsync())!;
    }
}

/// <summary>
/// Tenants with a retention policy configured in this host, of this test run only (the test databases persist across
/// runs): an operation on a whole tenant (an admin's retention apply, its totals) sees nothing but this run's conversations.
/// </summary>
public static class RetentionTenants
{
    public static readonly string Delete = $"retention-delete-{Guid.NewGuid():N}";
    public static readonly string Archive = $"retention-archive-{Guid.NewGuid():N}";
    public static readonly string KeepLast = $"retention-keep-last-{Guid.NewGuid():N}";

    /// <summary>A tenant of this test run only: its totals hold nothing but what the totals test appended.</summary>
    public static readonly string Totals = $"retention-totals-{Guid.NewGuid():N}";
}

[CollectionDefinition(Name)]
public sealed class AppCollection : ICollectionFixture<ConversationsApp>
{
    public const string Name = "conversations";
}

/// <summary>
/// The same host on a database of its own, for the retention tests (the users of <see cref="RetentionTenants"/>, the
/// longest tests of the assembly): their collection runs beside <see cref="AppCollection"/> instead of after it.
/// </summary>
public sealed class RetentionApp() : ConversationsApp(TestDatabase("conversations_retention"));

[CollectionDefinition(Name)]
public sealed class RetentionCollection : ICollectionFixture<RetentionApp>
{
    public const string Name = "conversations-retention";
}

/// <summary>
/// The fixture of the tests that run the Host only as processes (<see cref="TelemetryExportTests"/>,
/// <see cref="ProcessStartTests"/>): their collection runs beside <see cref="AppCollection"/> instead of inside it.
/// </summary>
public sealed class ConversationsProcessesApp() : ProcessesApp(TestDatabase("conversations_processes"));

[CollectionDefinition(Name)]
public sealed class ProcessesCollection : ICollectionFixture<ConversationsProcessesApp>
{
    public const string Name = "conversations-processes";
}

/// <summary>A downstream subscriber, as another module would be: it only sees Contracts events and the envelope's tenant.</summary>
public static class IntegrationEventProbe
{
    public static readonly ConcurrentQueue<(string? Tenant, IConversationEvent Event)> Received = new();
}

public sealed class IntegrationEventProbeHandler
{
    public static void Handle(MessageAppended e, Envelope envelope) => IntegrationEventProbe.Received.Enqueue((envelope.TenantId, e));

    public static void Handle(ConversationStarted e, Envelope envelope) => IntegrationEventProbe.Received.Enqueue((envelope.TenantId, e));

    public static void Handle(ConversationDeleted e, Envelope envelope) => IntegrationEventProbe.Received.Enqueue((envelope.TenantId, e));

    public static void Handle(ConversationRenamed e, Envelope envelope) => IntegrationEventProbe.Received.Enqueue((envelope.TenantId, e));

    public static void Handle(ConversationMetadataChanged e, Envelope envelope) => IntegrationEventProbe.Received.Enqueue((envelope.TenantId, e));
}
