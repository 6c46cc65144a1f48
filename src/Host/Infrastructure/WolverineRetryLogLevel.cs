using Microsoft.Extensions.DependencyInjection.Extensions;
using Wolverine.Runtime;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// Wolverine logs every retry it schedules or defers ("Envelope ... was rescheduled to queue", event
/// <see cref="WolverineRuntime.RescheduledEventId"/> of <c>Wolverine.Runtime.WolverineRuntime</c>) at Error, a level fixed
/// in its code, and a logging filter can only drop a category's entries, not one event's or lower its level. A retry is
/// a warning here (an error is what an operator has to act on: the dead-lettering that ends the retries, which stays an
/// error). The service's logger factory wraps Wolverine's runtime logger and writes that one event at Warning, to every
/// provider and through the usual filters.
/// </summary>
internal sealed class WolverineRetryLogLevel(LoggerFactory inner) : ILoggerFactory
{
    /// <summary>The category of Wolverine's runtime logger.</summary>
    public static readonly string Category = typeof(WolverineRuntime).FullName!;

    /// <summary>Makes the service's <see cref="ILoggerFactory"/> this one, over the factory it would have had.</summary>
    public static void Register(IServiceCollection services)
    {
        services.TryAddSingleton<LoggerFactory>();
        services.Replace(ServiceDescriptor.Singleton<ILoggerFactory>(sp => new WolverineRetryLogLevel(sp.GetRequiredService<LoggerFactory>())));
    }

    public ILogger CreateLogger(string categoryName)
    {
        var logger = inner.CreateLogger(categoryName);
        return string.Equals(categoryName, Category, StringComparison.Ordinal) ? new RetriesAsWarnings(logger) : logger;
    }

    public void AddProvider(ILoggerProvider provider) => inner.AddProvider(provider);

    public void Dispose()
    {
        // The container disposes the inner factory, which it created.
    }

    private sealed class RetriesAsWarnings(ILogger inner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var level = eventId.Id == WolverineRuntime.RescheduledEventId && logLevel == LogLevel.Error ? LogLevel.Warning : logLevel;
            if (inner.IsEnabled(level))
            {
                inner.Log(level, eventId, state, exception, formatter);
            }
        }
    }
}
