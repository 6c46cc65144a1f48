using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace ModularChat.Testing;

/// <summary>One entry a host logged.</summary>
public sealed record LogEntry(LogLevel Level, string Category, EventId EventId, string Message, Exception? Exception)
{
    public override string ToString() => $"{Level} {Category}: {Message} {Exception}";
}

/// <summary>
/// Every entry of every level the hosts it is registered in log (add it as an <see cref="ILoggerProvider"/>), for tests
/// that look for secrets in the logs or check the level an event is logged at.
/// </summary>
public sealed class CapturedLogs : ILoggerProvider
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();

    public IEnumerable<LogEntry> Entries => _entries;

    /// <summary>Each entry as one line: level, category, message, exception.</summary>
    public IEnumerable<string> Lines => _entries.Select(e => e.ToString());

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, _entries);

    public void Dispose()
    {
    }

    private sealed class Logger(string category, ConcurrentQueue<LogEntry> sink) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull
        {
            sink.Enqueue(new LogEntry(LogLevel.None, category, default, $"scope: {state}", null));
            return null;
        }

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => sink.Enqueue(new LogEntry(logLevel, category, eventId, formatter(state, exception), exception));
    }
}
