using System.ComponentModel;
using System.Diagnostics;
using Microsoft.Extensions.Hosting;

namespace ModularChat.Providers.Mcp;

/// <summary>
/// The stdio MCP programs this service runs. Each is killed (with everything it started) when its connection ends, and
/// whatever is still running when the host stops is killed then: a program started by a request that has not ended
/// (a turn still waiting for its model, a connection nobody disposed) would otherwise outlive the service, reparented
/// to init.
/// </summary>
internal sealed class McpStdioProcesses : IDisposable
{
    private readonly HashSet<Process> _running = [];
    private readonly Lock _gate = new();
    private readonly CancellationTokenRegistration _stopped;
    private bool _stopping;

    public McpStdioProcesses(IHostApplicationLifetime lifetime)
        => _stopped = lifetime.ApplicationStopped.Register(KillAll); // after the requests in flight were given their time to end

    /// <summary>Starts <paramref name="start"/> and tracks it; refused once the host is stopping.</summary>
    /// <exception cref="McpStdioException">
    /// The program could not be started: the message names it and the system's reason, and nothing of this service (the
    /// runtime's own message names the service's working directory, which a tenant has no business knowing).
    /// </exception>
    public Process Start(ProcessStartInfo start)
    {
        lock (_gate)
        {
            if (_stopping)
            {
                throw new McpConnectException("This service is stopping: it starts no more programs.");
            }

            Process? process;
            try
            {
                process = Process.Start(start);
            }
            catch (Win32Exception e)
            {
                // The reason alone, as the system words it for the error number ("No such file or directory", "Permission denied").
                throw new McpStdioException($"The program '{start.FileName}' could not be started: {new Win32Exception(e.NativeErrorCode).Message.TrimEnd('.')}.");
            }

            if (process is null)
            {
                throw new McpStdioException($"The program '{start.FileName}' could not be started.");
            }

            _running.Add(process);
            return process;
        }
    }

    /// <summary>Kills <paramref name="process"/> and everything it started, unless it ended already, and forgets it.</summary>
    public void Kill(Process process)
    {
        lock (_gate)
        {
            _running.Remove(process);
        }

        KillTree(process);
    }

    private void KillAll()
    {
        Process[] running;
        lock (_gate)
        {
            _stopping = true;
            running = [.. _running];
            _running.Clear();
        }

        foreach (var process in running)
        {
            KillTree(process);
        }
    }

    private static void KillTree(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (Exception e) when (e is InvalidOperationException or Win32Exception or NotSupportedException)
        {
            // It has exited already (or was never started).
        }
    }

    public void Dispose()
    {
        KillAll();
        _stopped.Dispose();
    }
}
