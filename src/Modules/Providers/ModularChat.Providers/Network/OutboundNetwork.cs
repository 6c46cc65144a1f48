using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;

namespace ModularChat.Providers.Network;

/// <summary>
/// Every outbound connection to a tenant-chosen URL (provider endpoints, MCP servers) goes through one HttpClient
/// whose connections are checked after DNS resolution: unless <see cref="OutboundNetworkOptions.AllowPrivateNetworks"/>,
/// loopback, private, link-local and other non-public addresses are refused (server-side request forgery).
/// </summary>
internal sealed partial class OutboundNetwork : IDisposable
{
    private readonly IOptionsMonitor<OutboundNetworkOptions> _options;
    private readonly Lazy<HttpMessageHandler> _handler;
    private readonly Lazy<HttpClient> _client;

    public OutboundNetwork(IOptionsMonitor<OutboundNetworkOptions> options)
    {
        _options = options;
        _handler = new Lazy<HttpMessageHandler>(() => new ResponseSizeLimit(() => _options.CurrentValue.MaxResponseBytes) { InnerHandler = CreateHandlers() });
        _client = new Lazy<HttpClient>(() => new HttpClient(_handler.Value, disposeHandler: false) { Timeout = Timeout.InfiniteTimeSpan });
    }

    /// <summary>The shared client (callers set their own timeouts with cancellation tokens).</summary>
    public HttpClient Client => _client.Value;

    /// <summary>
    /// A client, on the shared connections, that contacts <paramref name="origin"/>'s scheme, host and port only. For
    /// a protocol in which the server names further URLs (MCP's legacy SSE transport posts to the endpoint its stream
    /// announces): a server that names another origin must not get the connection's secret headers sent there.
    /// Disposing it leaves the shared connections open.
    /// </summary>
    public HttpClient ClientFor(Uri origin)
        => new(new SameOrigin(origin) { InnerHandler = _handler.Value }, disposeHandler: false) { Timeout = Timeout.InfiniteTimeSpan };

    /// <summary>Null when <paramref name="url"/> is an acceptable target, else why not (for a 400 naming the field).</summary>
    public string? Check(string? url, string field, out Uri? uri)
    {
        uri = null;
        if (string.IsNullOrWhiteSpace(url))
        {
            return $"'{field}' is required.";
        }

        if (!Uri.TryCreate(url.Trim(), UriKind.Absolute, out var parsed) || parsed.Scheme is not ("http" or "https") || string.IsNullOrEmpty(parsed.Host))
        {
            return $"'{field}' must be an absolute http(s) URL.";
        }

        if (!string.IsNullOrEmpty(parsed.UserInfo))
        {
            return $"'{field}' must not carry credentials: put API keys in 'apiKey' or secret headers.";
        }

        var settings = _options.CurrentValue;
        if (parsed.Scheme == "http" && !settings.AllowHttp)
        {
            return $"'{field}' must use https (OutboundNetwork:AllowHttp is off).";
        }

        if (!settings.AllowPrivateNetworks && (parsed.IsLoopback || (IPAddress.TryParse(parsed.DnsSafeHost, out var address) && !IsPublic(address))))
        {
            return $"'{field}' points to a loopback or private-network address, which this server does not connect to (OutboundNetwork:AllowPrivateNetworks).";
        }

        uri = parsed;
        return null;
    }

    /// <summary>
    /// Null when <paramref name="url"/> may be stored as given, else why not: what <see cref="Check"/> asks, and besides
    /// at most <see cref="MaxUrlLength"/> characters and no credential in its query. Those two are asked of new
    /// settings only, so that a server stored before keeps connecting.
    /// </summary>
    public string? CheckNew(string? url, string field)
    {
        if (url is { Length: > MaxUrlLength })
        {
            return $"'{field}' may be at most {MaxUrlLength} characters.";
        }

        if (Check(url, field, out var parsed) is { } problem)
        {
            return problem;
        }

        return CredentialInQuery(parsed!.Query) is { } parameter
            ? $"'{field}' must not carry credentials (its query parameter '{parameter}'): put API keys in 'apiKey' or secret headers."
            : null;
    }

    /// <summary>Longest URL accepted: longer ones are refused by many servers and proxies, and are no API root.</summary>
    public const int MaxUrlLength = 2048;

    /// <summary>
    /// The first query parameter whose name says it carries a credential (<c>api_key</c>, <c>token</c>, <c>sig</c>, ...),
    /// if any. Refused like a URL's user and password: URLs are shown in the API and may be logged. Other query
    /// parameters (an API version, a profile) are kept.
    /// </summary>
    internal static string? CredentialInQuery(string query)
        => query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries)
            .Select(p => Uri.UnescapeDataString(p.Split('=', 2)[0].Replace('+', ' ')))
            .FirstOrDefault(name => CredentialName().IsMatch(name));

    [GeneratedRegex(@"(?i)(key|token|secret|passw|pwd|auth|credential|signature|session|^(sig|code|pass|jwt|bearer)$)")]
    private static partial Regex CredentialName();

    /// <summary>
    /// Whether <paramref name="address"/> is on the public internet. The one classification of both checks: when a URL
    /// is stored (<see cref="Check"/>) and when a connection is made (after DNS resolution).
    /// </summary>
    /// <remarks>
    /// IPv6 forms that carry an IPv4 address reach that address through a translator or tunnel, so they are only as
    /// public as the address they carry: IPv4-mapped (::ffff:0:0/96), IPv4-translated (::ffff:0:0:0/96), IPv4-compatible
    /// (::/96), NAT64 (64:ff9b::/96), 6to4 (2002::/16, the address in bits 16-48) and Teredo (2001::/32: the server's
    /// address in bits 32-64 and the client's, inverted, in the last 32 bits; both must be public). Local-use NAT64
    /// (64:ff9b:1::/48) is a site's own translator and never public, nor are documentation (2001:db8::/32, 3fff::/20;
    /// IPv4's 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24: never routed on the internet, so an address of theirs is
    /// always someone's own network, this machine's interface sometimes) and discard-only (100::/64) addresses.
    /// </remarks>
    public static bool IsPublic(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any) || address.Equals(IPAddress.Broadcast))
        {
            return false;
        }

        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            return IsPublicIPv4(address.GetAddressBytes());
        }

        var v6 = address.GetAddressBytes();
        if (address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || address.IsIPv6Multicast
            || (v6[0] & 0xFE) == 0xFC // unique local fc00::/7
            || StartsWith(v6, 0x00, 0x64, 0xFF, 0x9B, 0x00, 0x01) // local-use NAT64 64:ff9b:1::/48
            || StartsWith(v6, 0x20, 0x01, 0x0D, 0xB8) // documentation 2001:db8::/32
            || (v6[0] == 0x3F && (v6[1] & 0xF0) == 0xF0) // documentation 3fff::/20
            || StartsWith(v6, 0x01, 0x00, 0, 0, 0, 0, 0, 0)) // discard-only 100::/64
        {
            return false;
        }

        if (StartsWith(v6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) // IPv4-compatible ::a.b.c.d
            || StartsWith(v6, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0) // IPv4-translated ::ffff:0:a.b.c.d
            || StartsWith(v6, 0x00, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0)) // NAT64 64:ff9b::a.b.c.d
        {
            return IsPublicIPv4(v6.AsSpan(12, 4));
        }

        if (StartsWith(v6, 0x20, 0x02)) // 6to4 2002:AABB:CCDD::/48
        {
            return IsPublicIPv4(v6.AsSpan(2, 4));
        }

        if (StartsWith(v6, 0x20, 0x01, 0x00, 0x00)) // Teredo 2001::/32
        {
            Span<byte> client = [(byte)~v6[12], (byte)~v6[13], (byte)~v6[14], (byte)~v6[15]];
            return IsPublicIPv4(v6.AsSpan(4, 4)) && IsPublicIPv4(client);
        }

        return true;
    }

    private static bool StartsWith(byte[] address, params ReadOnlySpan<byte> prefix) => address.AsSpan().StartsWith(prefix);

    private static bool IsPublicIPv4(ReadOnlySpan<byte> b)
        => !(b[0] == 0 || b[0] == 10 || b[0] == 127
            || (b[0] == 100 && b[1] >= 64 && b[1] <= 127) // carrier-grade NAT
            || (b[0] == 169 && b[1] == 254) // link-local, cloud metadata services
            || (b[0] == 172 && b[1] >= 16 && b[1] <= 31)
            || (b[0] == 192 && b[1] == 168)
            || (b[0] == 192 && b[1] == 0 && (b[2] == 0 || b[2] == 2)) // IETF protocol assignments, documentation (TEST-NET-1)
            || (b[0] == 198 && b[1] == 51 && b[2] == 100) // documentation (TEST-NET-2)
            || (b[0] == 203 && b[1] == 0 && b[2] == 113) // documentation (TEST-NET-3)
            || (b[0] == 198 && (b[1] == 18 || b[1] == 19)) // benchmarking
            || b[0] >= 224); // multicast, reserved and broadcast

    /// <summary>The connections; with a proxy (read once, at the first call), each request's target is judged before it goes to the proxy.</summary>
    private HttpMessageHandler CreateHandlers()
    {
        if (_options.CurrentValue.ProxyParts() is not { } proxy)
        {
            return CreateHandler(null);
        }

        // Loopback targets and those of the bypass list are reached directly: those connections are judged by ConnectAsync, as without a proxy.
        ProxyBypassList.TryParse(_options.CurrentValue.ProxyBypass, out var bypass, out _); // validated at start
        var configured = new ConfiguredProxy(proxy.Address, proxy.Credentials, bypass);
        return new ProxiedTargets(this) { InnerHandler = CreateHandler(configured) };
    }

    private SocketsHttpHandler CreateHandler(ConfiguredProxy? proxy) => new()
    {
        AllowAutoRedirect = false,
        // No system proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY), only the one configured: through a proxy the connection
        // below is the proxy's, so the address rules must judge each request's target before it is sent (ProxiedTargets).
        UseProxy = proxy is not null,
        Proxy = proxy,
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        ConnectTimeout = TimeSpan.FromSeconds(15),
        ConnectCallback = (context, cancellationToken) => ConnectAsync(context, proxy?.Address, cancellationToken),
    };

    /// <summary>The configured proxy, for every target but loopback ones and those of <see cref="OutboundNetworkOptions.ProxyBypass"/>.</summary>
    private sealed class ConfiguredProxy(Uri address, ICredentials? credentials, ProxyBypassList bypass) : IWebProxy
    {
        public Uri Address => address;

        public ICredentials? Credentials { get; set; } = credentials;

        public Uri GetProxy(Uri destination) => address;

        public bool IsBypassed(Uri host) => host.IsLoopback || bypass.Matches(host.DnsSafeHost);
    }

    /// <summary>
    /// Null when a request to <paramref name="target"/> may go out, else why not: plain http when it is off, and unless
    /// private networks are allowed, any address of the target's name that is not public (or a name that does not resolve).
    /// </summary>
    private async ValueTask<string?> RefusalAsync(Uri target, CancellationToken cancellationToken)
    {
        var settings = _options.CurrentValue;
        var host = target.DnsSafeHost;
        if (!settings.AllowHttp && target.Scheme == Uri.UriSchemeHttp)
        {
            return HttpRefused(host);
        }

        if (settings.AllowPrivateNetworks)
        {
            return null;
        }

        IPAddress[] addresses;
        try
        {
            addresses = IPAddress.TryParse(host, out var literal) ? [literal] : await Dns.GetHostAddressesAsync(host, cancellationToken);
        }
        catch (SocketException)
        {
            addresses = [];
        }

        return addresses.Length == 0
            ? $"Connection to '{host}' refused: its name does not resolve here, so its addresses cannot be checked before the proxy reaches them (OutboundNetwork:AllowPrivateNetworks is off)."
            : addresses.All(IsPublic)
                ? null
                : PrivateRefused(host);
    }

    private async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, Uri? proxy, CancellationToken cancellationToken)
    {
        var host = context.DnsEndPoint.Host;
        var target = context.InitialRequestMessage.RequestUri;
        IPAddress[] addresses;
        var skippedPrivate = false;
        if (proxy is not null && string.Equals(host, proxy.DnsSafeHost, StringComparison.OrdinalIgnoreCase) && context.DnsEndPoint.Port == proxy.Port)
        {
            // The operator's proxy, wherever it is. Every request's target was judged before it was sent (ProxiedTargets),
            // the ones that bypass the proxy too: a target that is the proxy's own address was judged as a target.
            addresses = IPAddress.TryParse(host, out var proxyAddress) ? [proxyAddress] : await Dns.GetHostAddressesAsync(host, cancellationToken);
        }
        else
        {
            // Checked when a URL is stored, and again here: a provider or server stored with http before the setting was
            // turned off must not go on sending its key in clear text.
            if (!_options.CurrentValue.AllowHttp && target?.Scheme == Uri.UriSchemeHttp)
            {
                throw new OutboundRefusedException(HttpRefused(host));
            }

            addresses = IPAddress.TryParse(host, out var literal) ? [literal] : await Dns.GetHostAddressesAsync(host, cancellationToken);
            if (!_options.CurrentValue.AllowPrivateNetworks)
            {
                var all = addresses.Length;
                addresses = addresses.Where(IsPublic).ToArray();
                if (addresses.Length == 0)
                {
                    throw new OutboundRefusedException(PrivateRefused(host));
                }

                skippedPrivate = addresses.Length < all;
            }
        }

        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(addresses, context.DnsEndPoint.Port, cancellationToken);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch (SocketException e) when (skippedPrivate)
        {
            // A name with private addresses too (a machine's own name: loopback and its interface's): "refused" alone would
            // hide why the server listening on one of those was never tried.
            socket.Dispose();
            throw new OutboundRefusedException(
                $"Connection to '{host}' failed at the public addresses of its name ({Reason(e)}); its loopback or private-network " +
                "addresses were not tried (OutboundNetwork:AllowPrivateNetworks is off).", e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static string Reason(SocketException e) => e.SocketErrorCode switch
    {
        SocketError.ConnectionRefused => "the connection was refused",
        SocketError.TimedOut => "connecting timed out",
        SocketError.NetworkUnreachable or SocketError.HostUnreachable => "unreachable from here",
        _ => e.SocketErrorCode.ToString(),
    };

    public void Dispose()
    {
        if (_client.IsValueCreated)
        {
            _client.Value.Dispose();
        }

        if (_handler.IsValueCreated)
        {
            _handler.Value.Dispose();
        }
    }

    private static string HttpRefused(string host)
        => $"Connection to '{host}' refused: plain http is not allowed (OutboundNetwork:AllowHttp is off); change the URL to https.";

    private static string PrivateRefused(string host)
        => $"Connection to '{host}' refused: it is a loopback or private-network address (OutboundNetwork:AllowPrivateNetworks is off).";

    /// <summary>
    /// Through a proxy, judges each request's target before it is sent: a connection to the proxy carries requests for
    /// many targets (plain http ones share it), and the proxy resolves names itself.
    /// </summary>
    private sealed class ProxiedTargets(OutboundNetwork network) : DelegatingHandler
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.RequestUri is { } target && await network.RefusalAsync(target, cancellationToken) is { } refusal)
            {
                throw new OutboundRefusedException(refusal);
            }

            return await base.SendAsync(request, cancellationToken);
        }
    }

    private sealed class SameOrigin(Uri origin) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var target = request.RequestUri;
            if (target is null || Uri.Compare(target, origin, UriComponents.SchemeAndServer, UriFormat.UriEscaped, StringComparison.OrdinalIgnoreCase) != 0)
            {
                throw new HttpRequestException(
                    $"The server at {origin.GetLeftPart(UriPartial.Authority)} pointed this connection at {target?.GetLeftPart(UriPartial.Authority) ?? "nothing"}, another origin; only its own is contacted.");
            }

            return base.SendAsync(request, cancellationToken);
        }

        // The inner handler is the shared one: never disposed with this one.
        protected override void Dispose(bool disposing)
        {
        }
    }
}

/// <summary>
/// A connection the address rules refused (or, where they left out a name's private addresses, that failed at the rest):
/// its message is the rule's reason, which callers report as it is rather than what the socket said.
/// </summary>
internal sealed class OutboundRefusedException(string message, Exception? inner = null) : HttpRequestException(message, inner);
