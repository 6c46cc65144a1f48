using System.Net;
using System.Net.Sockets;

namespace ModularChat.Testing;

/// <summary>
/// A loopback TCP relay in front of a real server (PostgreSQL, Redis), so a test can take the server away from a host and
/// give it back: <see cref="Cut"/> drops every relayed connection and refuses new ones; <see cref="Stall"/> keeps them
/// open but passes nothing either way, as a server that stopped answering; <see cref="Restore"/> relays again. The server
/// itself is untouched.
/// </summary>
public sealed class TcpProxy : IAsyncDisposable
{
    private readonly string _targetHost;
    private readonly int _targetPort;
    private readonly List<TcpClient> _open = [];
    private readonly Lock _gate = new();
    private TcpListener? _listener;
    private CancellationTokenSource _stop = new();
    private Task _accepting = Task.CompletedTask;
    private TaskCompletionSource _flowing = Flowing();

    public TcpProxy(string targetHost, int targetPort)
    {
        _targetHost = targetHost;
        _targetPort = targetPort;
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        Port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        Restore();
    }

    /// <summary>A relay in front of the Redis that <paramref name="redisConnectionString"/> names (its first endpoint).</summary>
    public static TcpProxy InFrontOfRedis(string redisConnectionString)
    {
        var (host, port) = StackExchange.Redis.ConfigurationOptions.Parse(redisConnectionString).EndPoints[0] switch
        {
            DnsEndPoint dns => (dns.Host, dns.Port),
            IPEndPoint ip => (ip.Address.ToString(), ip.Port),
            var other => throw new NotSupportedException($"Redis at {other}"),
        };
        return new TcpProxy(host, port);
    }

    /// <summary>The loopback port to connect to instead of the server's.</summary>
    public int Port { get; }

    /// <summary>Drops every relayed connection and refuses new ones (connection refused), as a server that went away.</summary>
    public void Cut()
    {
        _stop.Cancel();
        _listener?.Stop();
        lock (_gate)
        {
            foreach (var client in _open)
            {
                try
                {
                    client.Client.LingerState = new LingerOption(true, 0); // reset, not a polite close
                }
                catch (Exception e) when (e is ObjectDisposedException or SocketException)
                {
                    // Closed meanwhile.
                }

                client.Dispose();
            }

            _open.Clear();
        }
    }

    /// <summary>
    /// Holds every byte from now on, both ways, on the open connections and on new ones (which are accepted): the
    /// server's answers stop coming, without any connection closing.
    /// </summary>
    public void Stall()
    {
        lock (_gate)
        {
            if (_flowing.Task.IsCompleted)
            {
                _flowing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }
    }

    /// <summary>Relays again (what a stall held goes through).</summary>
    public void Restore()
    {
        lock (_gate)
        {
            _flowing.TrySetResult();
        }

        if (_listener is not null && !_stop.IsCancellationRequested)
        {
            return; // only stalled: still listening
        }

        _stop = new CancellationTokenSource();
        _listener = new TcpListener(IPAddress.Loopback, Port);
        _listener.Start();
        var listener = _listener;
        var stop = _stop.Token;
        _accepting = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                TcpClient inbound;
                try
                {
                    inbound = await listener.AcceptTcpClientAsync(stop);
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                    return;
                }

                _ = RelayAsync(inbound, stop);
            }
        });
    }

    private async Task RelayAsync(TcpClient inbound, CancellationToken stop)
    {
        var outbound = new TcpClient();
        lock (_gate)
        {
            _open.Add(inbound);
            _open.Add(outbound);
        }

        try
        {
            await outbound.ConnectAsync(_targetHost, _targetPort, stop);
            await using var a = inbound.GetStream();
            await using var b = outbound.GetStream();
            await Task.WhenAny(CopyAsync(a, b, stop), CopyAsync(b, a, stop));
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // Either side went away, or the proxy was cut.
        }
        finally
        {
            lock (_gate)
            {
                _open.Remove(inbound);
                _open.Remove(outbound);
            }

            inbound.Dispose();
            outbound.Dispose();
        }
    }

    /// <summary>Copies <paramref name="from"/> to <paramref name="to"/>, each chunk once the relay flows.</summary>
    private async Task CopyAsync(Stream from, Stream to, CancellationToken stop)
    {
        var buffer = new byte[81920];
        int read;
        while ((read = await from.ReadAsync(buffer, stop)) > 0)
        {
            Task flowing;
            lock (_gate)
            {
                flowing = _flowing.Task;
            }

            await flowing.WaitAsync(stop);
            await to.WriteAsync(buffer.AsMemory(0, read), stop);
        }
    }

    private static TaskCompletionSource Flowing()
    {
        var flowing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        flowing.SetResult();
        return flowing;
    }

    public async ValueTask DisposeAsync()
    {
        Cut();
        await _accepting;
        _stop.Dispose();
    }
}
