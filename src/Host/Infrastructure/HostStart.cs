using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Options;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// How the Host's process starts and how it ends when it cannot: a start refused for a known reason (a setting, an
/// unreachable database: <see cref="StartRefusedException.Reasons"/>) is printed once, as its message alone, and the process
/// ends with exit code 1 for its manager to see. Before, every refusal escaped the entry point: the runtime printed it a
/// second time with its stack trace and aborted the process (SIGABRT, exit code 134).
/// </summary>
internal static partial class HostStart
{
    /// <summary>
    /// Whether the Host is the process's entry point, rather than run by a host factory (the tests' in-memory hosts, the
    /// OpenAPI document's generation at build), which takes what the entry point throws as the reason its host failed.
    /// </summary>
    public static bool OwnsTheProcess { get; } = System.Reflection.Assembly.GetEntryAssembly() == typeof(HostStart).Assembly;

    /// <summary>
    /// The settings (validated options) and the start checks (<see cref="IStartCheck"/>), made before the host starts: the
    /// host's own start reports a failure with its stack trace (a fault; a refusal has none to show).
    /// </summary>
    public static async Task CheckAsync(IServiceProvider services)
    {
        services.GetService<IStartupValidator>()?.Validate();
        if (services.GetService<StartChecks>() is { } checks)
        {
            await checks.RunAsync(CancellationToken.None);
        }
    }

    /// <summary>
    /// The start check that PostgreSQL answers as configured, alone: before a command that works on the database without the
    /// service's other checks (<see cref="Nodes.HostRoles.ReachesTheDatabaseFirst"/>), so that an unreachable database refuses
    /// it in one line.
    /// </summary>
    public static Task CheckDatabaseAsync(IServiceProvider services)
        => new PersistenceSetup.DatabaseReachable(services.GetRequiredService<IConfiguration>()).CheckAsync(CancellationToken.None);

    /// <summary>
    /// Reports <paramref name="error"/>, which stopped the start before the host started (the host reports what fails in
    /// its own start), once: a refusal as its reasons, anything else with its stack trace. Through the Host's logging when
    /// <paramref name="app"/> was built (disposed then, which writes out what its console logger holds); before that (a
    /// setting read while the host is configured: <c>Limits</c>, <c>Cache</c>, <c>Messaging</c>, the connection strings),
    /// through a console logger configured from <paramref name="configuration"/>'s <c>Logging</c> section as the host's is,
    /// so that it reads as every other entry (before, it was a bare line on stderr, without the UTC timestamp); to stderr
    /// only when not even the configuration was read.
    /// </summary>
    /// <param name="configuration">The host's configuration, once read.</param>
    /// <param name="command">The command the process was run for (<c>rotate-keys</c>, ...), or null when it was to serve.</param>
    /// <returns>The process's exit code.</returns>
    public static async Task<int> FailedAsync(Exception error, WebApplication? app, IConfiguration? configuration, string? command = null)
    {
        var reasons = StartRefusedException.Reasons(error);
        if (app is null && configuration is null)
        {
            var what = command is null ? "The node could not start" : $"The command '{command}' failed";
            await Console.Error.WriteLineAsync(reasons is null ? $"{what}: {error}" : string.Join(Environment.NewLine, reasons));
            return 1;
        }

        // Disposed last: the console logger writes out what it holds.
        using var logging = app is null
            ? LoggerFactory.Create(l => l.AddConfiguration(configuration!.GetSection("Logging")).AddConsole().UseTimestampFormatsPerFormatter())
            : null;
        var logger = (logging ?? app!.Services.GetRequiredService<ILoggerFactory>()).CreateLogger(typeof(HostStart).FullName!);
        if (reasons is null)
        {
            if (command is null)
            {
                LogFailed(logger, error);
            }
            else
            {
                LogCommandFailed(logger, error, command);
            }
        }
        else
        {
            foreach (var reason in reasons)
            {
                if (command is null)
                {
                    LogRefused(logger, reason);
                }
                else
                {
                    LogCommandRefused(logger, command, reason);
                }
            }
        }

        if (app is not null)
        {
            await app.DisposeAsync();
        }

        return 1;
    }

    [LoggerMessage(Level = LogLevel.Critical, Message = "The node does not start: {Reason}")]
    private static partial void LogRefused(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Critical, Message = "The node could not start")]
    private static partial void LogFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Critical, Message = "The command '{Command}' is refused: {Reason}")]
    private static partial void LogCommandRefused(ILogger logger, string command, string reason);

    [LoggerMessage(Level = LogLevel.Critical, Message = "The command '{Command}' failed")]
    private static partial void LogCommandFailed(ILogger logger, Exception exception, string command);
}
