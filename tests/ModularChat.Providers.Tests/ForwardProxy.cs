using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace ModularChat.Providers.Tests;

/// <summary>
/// An HTTP forward proxy on loopback, as a network whose only way out is a proxy has one: <c>CONNECT host:port</c>
/// opens a tunnel, and a request in absolute form (<c>POST http://host/path</c>) is passed on. It reaches only the
/// targets it is given routes for (an authority such as <c>203.0.113.7:80</c> -> a loopback port, so tests can name
/// public addresses and still reach the fake servers); any other target answers 502. With credentials it asks for
/// Basic authentication (407) until a request carries them. It serves one request per connection (the
/// server it passes a request to is asked to close the connection after its answer, which tells the client so too).
/// </summary>
public sealed class ForwardProxy : IDisposable
{
    private readonly TcpListener _listener;
    private readonly IReadOnlyDictionary<string, int> _routes;
    private readonly string? _expectedAuthorization;
    private readonly CancellationTokenSource _stop = new();

    private ForwardProxy(TcpListener listener, IReadOnlyDictionary<string, int> routes, (string User, string Password)? credentials)
    {
        _listener = listener;
        _routes = routes;
        _expectedAuthorization = credentials is var (user, password)
            ? "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}"))
            : null;
    }

    /// <summary>The request line of each request served (<c>CONNECT 203.0.113.7:443</c>, <c>POST http://203.0.113.7/v1/...</c>).</summary>
    public ConcurrentQueue<string> Served { get; } = new();

    /// <summary>Requests answered 407 (without the credentials asked for).</summary>
    public int Challenged => _challenged;

    private int _challenged;

    public Uri Address => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");

    /// <summary>The proxy's address with <paramref name="user"/> and <paramref name="password"/> in it, as the setting takes them.</summary>
    public string AddressWith(string user, string password) => $"http://{Uri.EscapeDataString(user)}:{Uri.EscapeDataString(password)}@127.0.0.1:{Address.Port}";

    public static ForwardProxy Start(IReadOnlyDictionary<string, int> routes, (string User, string Password)? credentials = null)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var proxy = new ForwardProxy(listener, routes, credentials);
        _ = proxy.AcceptAsync();
        return proxy;
    }

    private async Task AcceptAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                _ = ServeAsync(client);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        using var _ = client;
        try
        {
            var inbound = client.GetStream();
            var head = await ReadHeadAsync(inbound);
            if (head is null)
            {
                return;
            }

            var text = Encoding.ASCII.GetString(head);
            var lines = text.Split("\r\n");
            var requestLine = lines[0].Split(' ');
            if (_expectedAuthorization is not null
                && !lines.Any(l => l.Equals("Proxy-Authorization: " + _expectedAuthorization, StringComparison.OrdinalIgnoreCase)))
            {
                Interlocked.Increment(ref _challenged);
                await WriteAsync(inbound, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"tests\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                return;
            }

            var connect = requestLine[0] == "CONNECT";
            var authority = connect ? requestLine[1] : AuthorityOf(requestLine[1]);
            Served.Enqueue($"{requestLine[0]} {requestLine[1]}");
            if (authority is null || !_routes.TryGetValue(authority, out var port))
            {
                await WriteAsync(inbound, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                return;
            }

            using var upstream = new TcpClient();
            await upstream.ConnectAsync(IPAddress.Loopback, port, _stop.Token);
            var outbound = upstream.GetStream();
            if (connect)
            {
                await WriteAsync(inbound, "HTTP/1.1 200 Connection established\r\n\r\n");
            }
            else
            {
                // The absolute form is what a server must accept too. One request per connection: the server then says
                // "Connection: close" in its answer, so the client sends its next request, perhaps for another target,
                // on a new connection to the proxy.
                var kept = lines.Skip(1).Where(l => l.Length > 0 && !IsHopByHop(l));
                var request = string.Join("\r\n", [lines[0], .. kept, "Connection: close", "", ""]);
                await outbound.WriteAsync(Encoding.ASCII.GetBytes(request), _stop.Token);
            }

            await Task.WhenAny(inbound.CopyToAsync(outbound, _stop.Token), outbound.CopyToAsync(inbound, _stop.Token));
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // Either side went away.
        }
    }

    private static bool IsHopByHop(string header)
        => header.StartsWith("Connection:", StringComparison.OrdinalIgnoreCase) || header.StartsWith("Proxy-", StringComparison.OrdinalIgnoreCase)
            || header.StartsWith("Keep-Alive:", StringComparison.OrdinalIgnoreCase);

    private static string? AuthorityOf(string target)
        => Uri.TryCreate(target, UriKind.Absolute, out var uri) ? $"{uri.Host}:{uri.Port}" : null;

    /// <summary>The request's line and headers, through the blank line (nothing of a body); null when the client left first.</summary>
    private async Task<byte[]?> ReadHeadAsync(NetworkStream stream)
    {
        var head = new List<byte>();
        var one = new byte[1];
        while (head.Count < 64 * 1024)
        {
            if (await stream.ReadAsync(one, _stop.Token) == 0)
            {
                return null;
            }

            head.Add(one[0]);
            if (head.Count >= 4 && head[^4] == '\r' && head[^3] == '\n' && head[^2] == '\r' && head[^1] == '\n')
            {
                return [.. head];
            }
        }

        return null;
    }

    private Task WriteAsync(NetworkStream stream, string text) => stream.WriteAsync(Encoding.ASCII.GetBytes(text), _stop.Token).AsTask();

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        _stop.Dispose();
    }
}
