using System.Net;

namespace ModularChat.Providers.Network;

/// <summary>
/// The targets that outbound calls reach without the configured proxy (<see cref="OutboundNetworkOptions.ProxyBypass"/>),
/// matched by the host of the URL a tenant named, as <c>NO_PROXY</c> lists are: a name matches itself and every name under
/// it (<c>corp.example</c>, <c>.corp.example</c> and <c>*.corp.example</c> alike), an IP address itself, a CIDR range
/// (<c>10.0.0.0/8</c>, <c>fd00::/8</c>) the addresses written in it. Names are not resolved to match a range: the list
/// decides the route, the address rules still judge where a connection goes.
/// </summary>
internal sealed class ProxyBypassList
{
    private readonly string[] _names;
    private readonly IPNetwork[] _networks;

    private ProxyBypassList(string[] names, IPNetwork[] networks) => (_names, _networks) = (names, networks);

    public static ProxyBypassList Empty { get; } = new([], []);

    /// <summary>Reads a list of entries separated by commas or white space; <paramref name="invalid"/> names the first entry that is none of the forms.</summary>
    public static bool TryParse(string? value, out ProxyBypassList list, out string? invalid)
    {
        (list, invalid) = (Empty, null);
        var names = new List<string>();
        var networks = new List<IPNetwork>();
        foreach (var entry in (value ?? "").Split([',', ' ', '\t', '\r', '\n'], StringSplitOptions.RemoveEmptyEntries))
        {
            if (entry.Contains('/', StringComparison.Ordinal))
            {
                if (!IPNetwork.TryParse(entry, out var network))
                {
                    invalid = entry;
                    return false;
                }

                networks.Add(network);
            }
            else if (IPAddress.TryParse(entry.TrimStart('[').TrimEnd(']'), out var address))
            {
                var single = Canonical(address);
                networks.Add(new IPNetwork(single, single.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128));
            }
            else
            {
                var name = entry.StartsWith("*.", StringComparison.Ordinal) ? entry[2..] : entry.TrimStart('.');
                name = name.TrimEnd('.').ToLowerInvariant();
                if (Uri.CheckHostName(name) != UriHostNameType.Dns)
                {
                    invalid = entry;
                    return false;
                }

                names.Add(name);
            }
        }

        list = new ProxyBypassList([.. names.Distinct(StringComparer.Ordinal)], [.. networks.Distinct()]);
        return true;
    }

    /// <summary>Whether a request to <paramref name="host"/> (a URL's host, without brackets) goes around the proxy.</summary>
    public bool Matches(string host)
    {
        if (IPAddress.TryParse(host, out var address))
        {
            address = Canonical(address);
            return _networks.Any(n => n.Contains(address));
        }

        var name = host.TrimEnd('.').ToLowerInvariant();
        return _names.Any(n => name == n || (name.Length > n.Length && name.EndsWith(n, StringComparison.Ordinal) && name[^(n.Length + 1)] == '.'));
    }

    /// <summary>An IPv4 address written as IPv6 (<c>::ffff:10.0.0.1</c>) is that IPv4 address; the scope of a link-local one does not count.</summary>
    private static IPAddress Canonical(IPAddress address)
        => address.IsIPv4MappedToIPv6 ? address.MapToIPv4()
            : address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 && address.ScopeId != 0 ? new IPAddress(address.GetAddressBytes())
            : address;
}
