using Microsoft.Extensions.Logging;
using Serilog;

namespace ModularChat.Testing;

/// <summary>
/// The warnings and errors of every host a test assembly starts, in one file per assembly inside the folder that
/// <see cref="FolderVariable"/> names (<c>./build.sh test</c> sets it, and prints the unhandled exceptions from these
/// files when a test fails). The test console shows none of the hosts' logging, so without them a 500 in CI says nothing
/// about its cause. Unset: nothing is written.
/// </summary>
public static class TestLogs
{
    public const string FolderVariable = "MODULARCHAT_TEST_LOGS";

    // Entries start with the time, so ./build.sh can cut the file into entries.
    private const string Template = "{Timestamp:HH:mm:ss.fff} {Level:u3} {SourceContext}{NewLine}  {Message:lj}{NewLine}{Exception}";

    private static readonly Lock Gate = new();
    private static Serilog.Core.Logger? _logger;

    /// <summary>Adds the file of <paramref name="assemblyName"/>'s run to a host's logging (when a folder is set).</summary>
    public static void AddTo(ILoggingBuilder logging, string assemblyName)
    {
        if (For(assemblyName) is { } logger)
        {
            // The logger lives as long as the test process: hosts come and go, their entries go to one file.
            logging.AddSerilog(logger, dispose: false);
        }
    }

    private static Serilog.Core.Logger? For(string assemblyName)
    {
        var folder = Environment.GetEnvironmentVariable(FolderVariable);
        if (string.IsNullOrEmpty(folder))
        {
            return null;
        }

        lock (Gate)
        {
            return _logger ??= new LoggerConfiguration()
                .MinimumLevel.Warning()
                .WriteTo.File(Path.Combine(folder, assemblyName + ".log"), outputTemplate: Template)
                .CreateLogger();
        }
    }
}
