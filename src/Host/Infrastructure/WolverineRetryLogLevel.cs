using System.Collections.Frozen;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging.Abstractions;
using ModularChat.BuildingBlocks.Messaging;
using Wolverine;
using Wolverine.Runtime;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// Wolverine logs every retry it schedules or defers ("Envelope ... was rescheduled to queue", event
/// <see cref="WolverineRuntime.RescheduledEventId"/> of <c>Wolverine.Runtime.WolverineRuntime</c>) at Error, a level fixed
/// in its code, and a logging filter can only drop a category's entries, not one event's or lower its level. A retry is
/// a warning here (an error is what an operator has to act on: the dead-lettering that ends the retries, which stays an
/// error). The service's logger factory wraps Wolverine's runtime logger and writes that one event at Warning, to every
/// provider and through the usual filters. Both entries, the retry's and the dead-lettering's, go to Debug for an attempt
/// whose handler logged its failure itself (<see cref="HandlerFailureLog"/>). And while PostgreSQL is away, the entries of
/// Wolverine's, JasperFx's and Marten's (its projection daemon's, its command log's) loggers about it go to Debug, the outage
/// logged once instead (<see cref="DatabaseOutageLog"/>); so do Wolverine's "Failed to process message" of a handler the
/// database being away failed (<see cref="MessageFailedEventId"/>, under the message type's category), and the retry entry
/// of a message put back to wait for the database (<see cref="DatabaseOutages.WaitsForTheDatabase"/>), which carries no
/// exception.
/// </summary>
internal sealed class WolverineRetryLogLevel(LoggerFactory inner, TimeProvider clock, TimeSpan outageLogInterval) : ILoggerFactory
{
    /// <summary>The category of Wolverine's runtime logger.</summary>
    public static readonly string Category = typeof(WolverineRuntime).FullName!;

    /// <summary>
    /// The categories (prefixes) whose entries about the database being away go to Debug while it lasts, for the outage is
    /// logged once instead: Wolverine's and JasperFx's (durability agents, listeners, leader election), Marten's projection
    /// daemon's, which logged an error with its stack trace at each poll of the event store's high-water mark (every ~1.4 s:
    /// 13 in an 18 s outage), and Marten's command log (<c>Marten.IDocumentStore</c>), which logged an error with its stack
    /// trace for each command sent on a connection the outage broke (the pool's connections, a commit's batch). A command
    /// that fails otherwise (a constraint, a bug) is still an error there; a lost concurrency race is Debug anyway
    /// (<see cref="ConcurrencyConflictsBelowError"/>).
    /// </summary>
    private static readonly string[] OutageCategories = ["Wolverine", "JasperFx", "Marten.Events.Daemon", "Marten.IDocumentStore"];

    /// <summary>
    /// Wolverine's "Failed to process message" (<c>Wolverine.Runtime.Handlers.Executor.MessageFailedEventId</c>, internal),
    /// with the exception, at the handler's <c>FailureLogLevel</c> (Error unless set: Debug for Summaries' jobs and batches of
    /// append notices, whose failures the module logs), once per failed attempt. Its executor writes it to a logger of the
    /// message type's category (<c>CreateLogger(Type)</c>: <c>ModularChat.Conversations.Contracts.ConversationDeleted</c>),
    /// out of reach of <see cref="OutageCategories"/>: a handler the database being away failed logged it with its stack
    /// trace at each attempt while the outage lasted.
    /// </summary>
    public const int MessageFailedEventId = 105;

    /// <summary>Where a database outage is logged once instead of by each of those loggers at each retry.</summary>
    private readonly DatabaseOutageLog _outages = new(inner.CreateLogger<DatabaseOutageLog>(), clock, outageLogInterval);

    /// <summary>
    /// The categories of Wolverine's executors' loggers, the only ones that write <see cref="MessageFailedEventId"/>: the names
    /// of the message types it handles, known once it has discovered its handlers (before it builds any executor). Only
    /// those loggers are wrapped, not every logger of the service (each wrapper is one more call on each of its entries).
    /// </summary>
    private volatile FrozenSet<string> _messageTypeCategories = FrozenSet<string>.Empty;

    /// <summary>
    /// Makes the service's <see cref="ILoggerFactory"/> this one, over the factory it would have had; the outage log's interval
    /// read now (a zero or negative one refuses the start, naming it).
    /// </summary>
    public static void Register(IServiceCollection services, IConfiguration configuration)
    {
        var outageLogInterval = PersistenceSetup.Positive(configuration, DatabaseOutageLog.IntervalSetting, DatabaseOutageLog.DefaultInterval);
        services.TryAddSingleton<LoggerFactory>();
        services.Replace(ServiceDescriptor.Singleton<ILoggerFactory>(
            sp => new WolverineRetryLogLevel(sp.GetRequiredService<LoggerFactory>(), sp.GetRequiredService<TimeProvider>(), outageLogInterval)));
        services.AddSingleton(sp => ((WolverineRetryLogLevel)sp.GetRequiredService<ILoggerFactory>())._outages);
        services.AddSingleton<IWolverineExtension>(sp => new MessageTypeCategories((WolverineRetryLogLevel)sp.GetRequiredService<ILoggerFactory>()));
        services.AddHostedService<DatabaseOutageLog.Probe>();
    }

    public ILogger CreateLogger(string categoryName)
    {
        var logger = inner.CreateLogger(categoryName);
        if (string.Equals(categoryName, Category, StringComparison.Ordinal))
        {
            logger = new RetriesAsWarnings(logger, _outages);
        }

        if (OutageCategories.Any(c => categoryName.StartsWith(c, StringComparison.Ordinal)))
        {
            return new OutageOnce(logger, _outages); // every entry, event 105 of Wolverine's own messages included
        }

        return _messageTypeCategories.Contains(categoryName) ? new OutageOnce(logger, _outages, MessageFailedEventId) : logger;
    }

    public void AddProvider(ILoggerProvider provider) => inner.AddProvider(provider);

    public void Dispose()
    {
        // The container disposes the inner factory, which it created.
    }

    /// <summary>
    /// Writes an entry about the database being away at Debug (<see cref="DatabaseOutageLog"/> logs the outage): any entry, or
    /// only those of event <paramref name="onlyEvent"/> (a message type's category is also the category of its handler's own
    /// logger, whose entries stay as the handler writes them).
    /// </summary>
    private sealed class OutageOnce(ILogger inner, DatabaseOutageLog outages, int? onlyEvent = null) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var level = logLevel is >= LogLevel.Warning and < LogLevel.None && (onlyEvent is not { } only || eventId.Id == only) && outages.Holds(exception)
                ? LogLevel.Debug
                : logLevel;
            if (inner.IsEnabled(level))
            {
                inner.Log(level, eventId, state, exception, formatter);
            }
        }
    }

    private sealed class RetriesAsWarnings(ILogger inner, DatabaseOutageLog outages) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var level = eventId.Id switch
            {
                // The handler logged this attempt's failure itself, once (HandlerFailureLog).
                WolverineRuntime.RescheduledEventId or WolverineRuntime.MovedToErrorQueueId when LoggedByHandler(state) => LogLevel.Debug,
                // A message put back to wait for the database, which did not answer (DatabaseOutages), while the outage is on
                // (or just ended: the message was put back after a pause).
                WolverineRuntime.RescheduledEventId when WaitsForTheDatabase(state) && outages.HoldsWait() => LogLevel.Debug,
                WolverineRuntime.RescheduledEventId when logLevel == LogLevel.Error => LogLevel.Warning,
                _ => logLevel,
            };
            if (inner.IsEnabled(level))
            {
                inner.Log(level, eventId, state, exception, formatter);
            }
        }

        /// <summary>Whether the entry's envelope (both events carry it) says its handler logged the failure.</summary>
        private static bool LoggedByHandler<TState>(TState state) => Carries(state, HandlerFailureLog.WasLogged);

        /// <summary>Whether the entry's envelope waits for a database that did not answer after its attempt failed.</summary>
        private static bool WaitsForTheDatabase<TState>(TState state) => Carries(state, DatabaseOutages.WaitsForTheDatabase);

        private static bool Carries<TState>(TState state, Func<Envelope, bool> envelopeSays)
            => state is IReadOnlyList<KeyValuePair<string, object?>> values && values.Any(v => v.Value is Envelope envelope && envelopeSays(envelope));
    }

    /// <summary>
    /// Tells the factory the categories of Wolverine's executors' loggers once Wolverine has discovered its handlers. Internal,
    /// not private: JasperFx's source generator lists the assembly's Wolverine extensions by name.
    /// </summary>
    internal sealed class MessageTypeCategories(WolverineRetryLogLevel factory) : IWolverineExtension
    {
        public void Configure(WolverineOptions options)
            => options.OnHandlersDiscovered(handlers => factory._messageTypeCategories = handlers.MessageTypes.Select(CategoryOf).ToFrozenSet(StringComparer.Ordinal));

        /// <summary>
        /// The category <see cref="LoggerFactoryExtensions.CreateLogger(ILoggerFactory, Type)"/>, which the executor calls,
        /// gives <paramref name="messageType"/> (its naming, of arrays, nested and generic types, is not public).
        /// </summary>
        private static string CategoryOf(Type messageType)
        {
            var capture = new CategoryCapture();
            capture.CreateLogger(messageType);
            return capture.Category!;
        }

        private sealed class CategoryCapture : ILoggerFactory
        {
            public string? Category { get; private set; }

            public ILogger CreateLogger(string categoryName)
            {
                Category = categoryName;
                return NullLogger.Instance;
            }

            public void AddProvider(ILoggerProvider provider) => throw new NotSupportedException();

            public void Dispose()
            {
            }
        }
    }
}
