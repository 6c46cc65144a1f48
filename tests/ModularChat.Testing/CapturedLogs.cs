using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace ModularChat.Testing;

/// <summary>One entry a host logged.</summary>
/// <param name="Mark">The <see cref="CapturedLogs.Mark"/> of the code that logged it, if it ran under one.</param>
public sealed record LogEntry(LogLevel Level, string Category, EventId EventId, string Message, Exception? Exception, string? Mark = null)
{
    /// <summary>When it was logged: when the host decided what it logs, for tests that bound that time.</summary>
    public DateTimeOffset At { get; } = DateTimeOffset.UtcNow;

    public override string ToString() => $"{Level} {Category}: {Message} {Exception}";
}

/// <summary>
/// Every entry of every level the hosts it is registered in log (add it as an <see cref="ILoggerProvider"/>), for tests
/// that look for secrets in the logs or check the level an event is logged at.
/// </summary>
public sealed class CapturedLogs : ILoggerProvider
{
    private static readonly AsyncLocal<string?> CurrentMark = new();
    private readonly ConcurrentQueue<LogEntry> _entries = new();

    /// <summary>
    /// Marks what the calling code logs, directly or through the code it awaits (the host's services it calls), with
    /// <paramref name="mark"/> until disposed: a test can tell its own entries from those of the host's background work
    /// (queues, the projection daemon, what earlier tests left running), which log into the same hosts meanwhile.
    /// </summary>
    public static IDisposable Mark(string mark)
    {
        var before = CurrentMark.Value;
        CurrentMark.Value = mark;
        return new Unmark(() => CurrentMark.Value = before);
    }

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
            sink.Enqueue(new LogEntry(LogLevel.None, category, default, $"scope: {state}", null, CurrentMark.Value));
            return null;
        }

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => sink.Enqueue(new LogEntry(logLevel, category, eventId, formatter(state, exception), exception, CurrentMark.Value));
    }

    private sealed class Unmark(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }
}
