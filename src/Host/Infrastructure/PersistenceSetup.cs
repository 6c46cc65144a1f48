using JasperFx;
using JasperFx.CodeGeneration;
using JasperFx.MultiTenancy;
using JasperFx.OpenTelemetry;
using JasperFx.Events;
using JasperFx.Events.Daemon;
using Marten;
using Npgsql;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Options;
using ModularChat.Conversations;
using ModularChat.Host.Nodes;
using ModularChat.Providers;
using ModularChat.Search;
using ModularChat.Summaries;
using Weasel.Core;
using Weasel.Core.Migrations;
using Weasel.Postgresql;
using Wolverine;
using Wolverine.Marten;

namespace ModularChat.Host.Infrastructure;

internal static class PersistenceSetup
{
    /// <summary>Whether this Host assembly carries Wolverine handler code generated ahead of time (its namespace is Wolverine's).</summary>
    private static bool HasPreGeneratedHandlers { get; } = typeof(PersistenceSetup).Assembly.GetTypes()
        .Any(t => t.Namespace?.StartsWith("Internal.Generated.WolverineHandlers", StringComparison.Ordinal) == true);

    /// <summary>The PostgreSQL schema that holds every ModularChat table (Marten's and Wolverine's).</summary>
    public const string Schema = "modularchat";

    public static string PostgresConnectionString(this IConfiguration configuration)
    {
        if (configuration.GetConnectionString("Postgres") is not { Length: > 0 } cs)
        {
            throw new StartRefusedException(
                "ConnectionStrings:Postgres is not set. Run ./build.sh run (it starts a local PostgreSQL), or set ConnectionStrings__Postgres.");
        }

        try
        {
            _ = new NpgsqlConnectionStringBuilder(cs);
            return cs;
        }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            // Npgsql names only its keyword ("Couldn't set port (Parameter 'port')"); the value is not repeated (it may hold the password).
            throw new StartRefusedException($"Configuration 'ConnectionStrings:Postgres' is not a valid PostgreSQL connection string: {e.Message}", e);
        }
    }

    /// <summary>
    /// Connection defaults for an OLTP workload of many small statements, unless the connection string sets them:
    /// keep session state between uses of a pooled connection (no DISCARD ALL on every checkout) and let Npgsql
    /// prepare the statements it sees repeatedly, so PostgreSQL parses and plans them once per connection.
    /// </summary>
    /// <remarks>
    /// Automatic preparation is worth ~30% more single appends on the 2-core machine (two alternating pairs of
    /// <c>./build.sh bench append</c>, 2026-12-02: ~1,080 against ~800 appends/s; batches about the same). It has a known
    /// failure: on a freshly started host, statements that PostgreSQL refused for a parameter value (text holding a NUL
    /// character, in a batch that was preparing them) left pooled connections out of step with the server, and the next
    /// request on each, of any tenant, failed with "Received unexpected backend message DataRow" (Npgsql 10.0.3;
    /// npgsql/npgsql#6391 reports the same kind of corruption). Npgsql then closes that connection and its transaction
    /// rolls back, so nothing half-written stays. Every known source of such a value is refused or cleaned before the
    /// database now (StorableTextJsonConverter, StorableText); a statement that timed out while being prepared (a held
    /// stream lock, three rounds on a fresh host) did not do it. Should the error show up again, <c>Max Auto Prepare=0</c>
    /// in the connection string turns preparation off.
    /// </remarks>
    public static string Tuned(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        var given = connectionString.ToLowerInvariant();
        if (!given.Contains("no reset on close", StringComparison.Ordinal))
        {
            builder.NoResetOnClose = true;
        }

        if (!given.Contains("max auto prepare", StringComparison.Ordinal))
        {
            builder.MaxAutoPrepare = 100;
            builder.AutoPrepareMinUsages = 2;
        }

        return builder.ConnectionString;
    }

    /// <summary>
    /// Marten on PostgreSQL: conjoined tenancy, every module's streams and projections, which a node (<paramref name="role"/>)
    /// runs as the cluster's leader assigns them, and a command never.
    /// </summary>
    public static IServiceCollection AddModularChatPersistence(this IServiceCollection services, IConfiguration configuration, HostRole role)
    {
        services.AddMarten(sp =>
            {
                var options = new StoreOptions();
                options.Connection(Tuned(configuration.PostgresConnectionString()));
                options.DatabaseSchemaName = Schema;
                options.UseSystemTextJsonForSerialization(EnumStorage.AsString, Casing.Default);
                options.AutoCreateSchemaObjects = AutoCreate.CreateOrUpdate;
                // How long a starting node waits for another node that applies the schema (SchemaApplied): Marten's 10 s
                // failed a node's start behind a slow migration (a new index on a large table) with a stack trace.
                options.ApplyChangesLockTimeout = Positive(configuration, SchemaLockTimeoutSetting, TimeSpan.FromMinutes(1));

                // Tenant = the caller's JWT tenant; a session for one tenant never sees another's rows.
                options.Events.TenancyStyle = TenancyStyle.Conjoined;
                options.Policies.AllDocumentsAreMultiTenanted();
                options.Events.StreamIdentity = StreamIdentity.AsGuid;
                options.Events.MetadataConfig.CorrelationIdEnabled = true;
                options.Events.MetadataConfig.CausationIdEnabled = true;

                // An append that expects a stream version locks the stream's row before it takes sequence numbers. Without
                // it, a summary revision appended while a deleted conversation's summary stream was being removed took its
                // numbers, then failed on the stream's foreign key: numbers that never commit are a hole the daemon waits
                // on for 3 s before it skips it (every asynchronous projection held). With it, such an append waits for
                // the removal and fails before taking any. Appends to conversations hold that lock already.
                options.Events.UseExclusiveLockOnConcurrentAppends = true;

                if (role == HostRole.Command)
                {
                    // The nodes run the asynchronous projections, not a command: said so, Marten does not warn at every
                    // command that they "will not be executed" (what Wolverine's distribution sets on the nodes).
                    options.Projections.AsyncMode = DaemonMode.ExternallyManaged;
                }

                // Failures in projections are loud, never silently skipped.
                options.Projections.Errors.SkipApplyErrors = false;
                options.Projections.Errors.SkipSerializationErrors = false;
                options.Projections.Errors.SkipUnknownEvents = false;
                options.Projections.RebuildErrors.SkipApplyErrors = false;

                options.OpenTelemetry.TrackConnections = TrackLevel.Normal;
                options.OpenTelemetry.TrackEventCounters();

                // The node list (GET /api/admin/nodes) is the deployment's, not a tenant's.
                options.Storage.ExtendedSchemaObjects.Add(NodeDirectory.Table(Schema));

                options.ConfigureConversations();
                options.ConfigureProviders();
                options.ConfigureSearch(sp);
                options.ConfigureSummaries();
                return options;
            })
            .UseLightweightSessions()
            // Not ApplyAllDatabaseChangesOnStartup(): SchemaApplied applies the schema before anything starts, so Marten's
            // own apply at start only compared the whole schema with the database a second time and found nothing to do.
            .IntegrateWithWolverine(integration =>
            {
                // Appended events go through Wolverine's outbox in the append's own transaction.
                integration.UseFastEventForwarding = true;
                // Async projections and subscriptions are spread over nodes by Wolverine (never Marten's HotCold here). Not
                // over commands: without the family of those agents, a command's node offers to run none of them, so the
                // leader never assigns it one (HostRole.Command).
                integration.UseWolverineManagedEventSubscriptionDistribution = role == HostRole.Node;
            });

        // Marten's own command log (set up by AddMarten when the store is built), with a lost concurrency race below Error.
        var store = services.Last(d => d.ServiceType == typeof(IDocumentStore) && d.ImplementationFactory is not null);
        services.Remove(store);
        services.AddSingleton<IDocumentStore>(sp =>
        {
            var built = (IDocumentStore)store.ImplementationFactory!(sp);
            var options = sp.GetRequiredService<StoreOptions>();
            options.Logger(new ConcurrencyConflictsBelowError(options.Logger(), sp.GetRequiredService<ILogger<IDocumentStore>>()));
            return built;
        });
        // The first checks at start: the others, and everything the node starts, need the database and its schema.
        services.AddStartCheck<DatabaseReachable>();
        services.AddStartCheck<SchemaApplied>();
        return services;
    }

    /// <summary>How long a starting node waits for the schema lock another node holds (SchemaApplied).</summary>
    internal const string SchemaLockTimeoutSetting = "Messaging:SchemaLockTimeout";

    /// <summary>
    /// Applies Marten's schema (every module's tables and functions, the node list) before the start checks that read it
    /// (the key ring's), under the advisory lock Marten takes for its own apply at start,
    /// <see cref="StoreOptions.ApplyChangesLockId"/>: one node at a time. It is the start's only apply of Marten's schema:
    /// every start of the Host makes the start checks first (the service, the tests' hosts, <c>summaries</c> and
    /// <c>retention</c>, which start the host), so Marten's own (<c>ApplyAllDatabaseChangesOnStartup</c>, a hosted service)
    /// is not used: after this one it compared the whole schema with the database again and found nothing to do (median
    /// ~115 ms of a restart on the 2-core development machine, ~170 ms in a test host). Commands that do not start the host
    /// (<c>resources</c>, <c>db-apply</c>, <c>projections</c>, <c>rotate-keys</c>) never ran it either.
    /// </summary>
    /// <remarks>
    /// Before, the key ring's check was the first to read a document table, which Marten then created on its own, outside
    /// that lock: two nodes started at once on a new database both created it, and one of them failed to start
    /// ("duplicate key value violates unique constraint pg_type_typname_nsp_index"; FirstStartTests). A node that finds
    /// the lock taken waits for the other's apply (<c>Messaging:SchemaLockTimeout</c>, <see cref="StoreOptions.ApplyChangesLockTimeout"/>),
    /// then applies what is left, which is nothing; one that waits longer is refused in one line naming the setting (Weasel
    /// threw "Unable to attain the global lock in time", with its stack trace).
    /// </remarks>
    private sealed class SchemaApplied(IDocumentStore store, StoreOptions options, TimeProvider clock) : IStartCheck, IGlobalLock<NpgsqlConnection>
    {
        private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(250);

        public Task CheckAsync(CancellationToken cancellationToken)
            => ((DatabaseBase<NpgsqlConnection>)store.Storage.Database).ApplyAllConfiguredChangesToDatabaseAsync(this, ct: cancellationToken);

        public async Task<AttainLockResult> TryAttainLock(NpgsqlConnection conn, CancellationToken ct = default)
        {
            var started = clock.GetTimestamp();
            while (true)
            {
                var result = await conn.TryGetGlobalLock(options.ApplyChangesLockId, ct);
                if (result.Succeeded || result.ShouldReconnect)
                {
                    return result;
                }

                if (clock.GetElapsedTime(started) >= options.ApplyChangesLockTimeout)
                {
                    throw new StartRefusedException(
                        $"Another session has held the schema lock (PostgreSQL advisory lock {options.ApplyChangesLockId}) for longer than " +
                        $"{SchemaLockTimeoutSetting} ({options.ApplyChangesLockTimeout}): usually another node applying a slow migration. " +
                        $"Start this node again when it is done, or raise {SchemaLockTimeoutSetting}; " +
                        $"'select pid from pg_locks where locktype = 'advisory' and objid = {options.ApplyChangesLockId}' names the session.");
                }

                await Task.Delay(Poll, clock, ct);
            }
        }

        public Task ReleaseLock(NpgsqlConnection conn, CancellationToken ct = default) => conn.ReleaseGlobalLock(options.ApplyChangesLockId, ct);
    }

    /// <summary>
    /// Refuses the start in one line when PostgreSQL cannot be reached (or refuses the connection) as configured: the first
    /// hosted service to use it failed instead, with its stack trace and Marten's or Wolverine's words. It does not wait for
    /// the database: a process manager restarts the node.
    /// </summary>
    internal sealed class DatabaseReachable(IConfiguration configuration) : IStartCheck
    {
        public async Task CheckAsync(CancellationToken cancellationToken)
        {
            var connectionString = configuration.PostgresConnectionString();
            var settings = new NpgsqlConnectionStringBuilder(connectionString);
            try
            {
                await using var connection = new NpgsqlConnection(connectionString);
                await connection.OpenAsync(cancellationToken);
            }
            catch (Exception e) when (e is NpgsqlException or TimeoutException && !cancellationToken.IsCancellationRequested)
            {
                // Npgsql's messages name the host, the user and the database, never the password.
                var why = e.InnerException is { } inner && !e.Message.Contains(inner.Message, StringComparison.Ordinal)
                    ? $"{e.Message.TrimEnd('.')}: {inner.Message}"
                    : e.Message;
                throw new StartRefusedException(
                    $"PostgreSQL at {settings.Host}:{settings.Port} could not be reached: {why.TrimEnd('.')}. Check ConnectionStrings:Postgres and that the database runs.", e);
            }
        }
    }

    /// <summary>The expiry of a dead letter kept until it is replayed (<c>Messaging:DeadLetterRetention</c> 0).</summary>
    internal static readonly TimeSpan KeptDeadLetterLifetime = TimeSpan.FromDays(100 * 365);

    /// <summary>
    /// An interval of <paramref name="setting"/> (<paramref name="fallback"/> when not set); zero or negative stops the start
    /// naming it (a timer of that period threw from a background service, naming only its parameter).
    /// </summary>
    internal static TimeSpan Positive(IConfiguration configuration, string setting, TimeSpan fallback)
    {
        var value = configuration.GetValue(setting, fallback);
        return value > TimeSpan.Zero
            ? value
            : throw new StartRefusedException($"Configuration '{setting}' must be a positive time span such as 00:00:10 (was {value}).");
    }

    /// <summary>Wolverine: durable local queues and outbox on the same PostgreSQL.</summary>
    public static void ConfigureModularChatMessaging(this WolverineOptions options, IConfiguration configuration, HostRole role)
    {
        options.ServiceName = "modularchat";
        if (role == HostRole.Command)
        {
            // A command checks in as a node of the cluster (Balanced, as the service: the messages it queues are its own,
            // and what it leaves unhandled when it stops goes back to the nodes), but it never leads the cluster, so it
            // never assigns work, to itself or to others, and it offers to run no projection (AddModularChatPersistence).
            // See HostRole.Command. Its durability agent stays enabled: with it off, Wolverine 6.62 neither creates its
            // tables (a command on a new database failed: "wolverine_nodes does not exist") nor records node events.
            options.Durability.LeadershipEligible = false;
        }

        // Handled messages carry message content; they are kept only briefly (local queues need no long
        // idempotency window), so content deleted by a user or by retention does not linger in the inbox.
        options.Durability.KeepAfterMessageHandling = configuration.GetValue("Messaging:KeepHandledMessagesFor", TimeSpan.FromSeconds(30));
        if (options.Durability.KeepAfterMessageHandling < TimeSpan.Zero)
        {
            throw new StartRefusedException(
                $"Configuration 'Messaging:KeepHandledMessagesFor' must not be negative (was {options.Durability.KeepAfterMessageHandling}); 0 deletes handled messages at the next clean-up.");
        }

        options.Durability.HandledMessageCleanupPollingTime = Positive(configuration, "Messaging:HandledMessageCleanupInterval", TimeSpan.FromSeconds(10));
        // Nodes check in and the leader assigns the projections (search indexing) at this interval; after a start, a node's
        // projections begin at about its second check (~13 s with Wolverine's default of 10 s, ~5 s with 2 s).
        options.Durability.HealthCheckPollingTime = Positive(configuration, "Messaging:HealthCheckInterval", options.Durability.HealthCheckPollingTime);
        // A node that stops checking in (killed, cut off from the database) keeps its projections and the messages it had
        // claimed until it has been silent this long and then seen so at two checks: after a crash, search indexing (and
        // whatever else that node ran) pauses for about this long plus two check intervals.
        options.Durability.StaleNodeTimeout = configuration.GetValue("Messaging:StaleNodeTimeout", options.Durability.StaleNodeTimeout);
        if (options.Durability.StaleNodeTimeout < 2 * options.Durability.HealthCheckPollingTime)
        {
            throw new StartRefusedException(
                $"Configuration 'Messaging:StaleNodeTimeout' must be at least twice Messaging:HealthCheckInterval ({options.Durability.HealthCheckPollingTime}), " +
                $"or a node that is only slow to check in is taken for dead (was {options.Durability.StaleNodeTimeout}).");
        }
        // Messages that failed for good wait in the dead-letter store for an operator to replay them. With a retention they
        // are deleted that long after they failed (Wolverine's durability agent looks hourly), replayed or not: a clean-up
        // after a deletion among them would then never be done. So by default they are kept: Wolverine's expiration stays
        // on with an expiry a century out, because it keeps the expiry in a column that exists only while expiration is on,
        // and a node started with it off drops that column (schema migration at start) from under the nodes that use it.
        var deadLetterRetention = configuration.GetValue("Messaging:DeadLetterRetention", TimeSpan.Zero);
        if (deadLetterRetention < TimeSpan.Zero)
        {
            throw new StartRefusedException($"Configuration 'Messaging:DeadLetterRetention' must not be negative (was {deadLetterRetention}); 0 keeps dead letters until they are replayed.");
        }

        options.Durability.DeadLetterQueueExpirationEnabled = true;
        options.Durability.DeadLetterQueueExpiration = deadLetterRetention > TimeSpan.Zero ? deadLetterRetention : KeptDeadLetterLifetime;

        // Handler code (ADR 0007): `./build.sh publish` compiles what Wolverine generates for the handlers into this
        // assembly ahead of time (codegen write), and then it is loaded as it is (Static: nothing is compiled at run time).
        // The development build and the tests have none: they generate and compile it in memory on first use (Dynamic).
        // Not Auto: it would also write the code it compiles to disk, into src/Host when run from the source tree, where
        // the next build would compile that copy in and keep using it after the handlers change.
        options.CodeGeneration.TypeLoadMode = HasPreGeneratedHandlers ? TypeLoadMode.Static : TypeLoadMode.Dynamic;
        options.UseRuntimeCompilation();
        options.Policies.AutoApplyTransactions();
        options.Policies.UseDurableLocalQueues();
        options.Policies.UseDurableInboxOnAllListeners();
        options.Policies.UseDurableOutboxOnAllSendingEndpoints();
        // Each module's handler of the same event runs in its own transaction with its own retries.
        options.MultipleHandlerBehavior = MultipleHandlerBehavior.Separated;
        // Any handler that meets the database away waits for it and tries again, whatever its own rules (DatabaseOutages);
        // the same errors while the database answers (a statement that always times out) count, and end in the dead-letter store.
        var maxAttemptsWhileUp = configuration.GetValue("Messaging:MaxAttemptsWhileDatabaseAnswers", DatabaseOutages.MaxAttemptsWhileUp);
        if (maxAttemptsWhileUp < 1)
        {
            throw new StartRefusedException($"Configuration 'Messaging:MaxAttemptsWhileDatabaseAnswers' must be at least 1 (was {maxAttemptsWhileUp}).");
        }

        options.WaitForTheDatabase(maxAttemptsWhileUp);
        // Anything else that a handler's own rules leave: a few retries, then the dead-letter store, named and counted by the
        // module that knows what the message was about (ReportedDeadLetters). After WaitForTheDatabase: rules apply in order.
        options.RetryOtherFailures();
        options.ConfigureConversations();
        options.ConfigureProviders();
        options.ConfigureSearch();
        options.ConfigureSummaries();
    }
}
