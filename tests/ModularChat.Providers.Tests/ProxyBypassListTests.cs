using ModularChat.Providers.Network;

namespace ModularChat.Providers.Tests;

/// <summary>How <c>OutboundNetwork:ProxyBypass</c> entries match a URL's host (no host, no database).</summary>
public sealed class ProxyBypassListTests
{
    [Theory]
    [InlineData("corp.example", "corp.example", true)]
    [InlineData("corp.example", "ollama.corp.example", true)]
    [InlineData("corp.example", "a.b.corp.example", true)]
    [InlineData(".corp.example", "corp.example", true)]
    [InlineData(".corp.example", "ollama.corp.example", true)]
    [InlineData("*.corp.example", "ollama.corp.example", true)]
    [InlineData("Corp.Example.", "OLLAMA.corp.example.", true)]
    [InlineData("corp.example", "xcorp.example", false)]
    [InlineData("corp.example", "corp.example.org", false)]
    [InlineData("ollama.corp.example", "corp.example", false)]
    [InlineData("10.0.0.0/8", "10.20.30.40", true)]
    [InlineData("10.0.0.0/8", "11.0.0.1", false)]
    [InlineData("10.0.0.0/8", "::ffff:10.1.2.3", true)] // an IPv4 address written as IPv6
    [InlineData("192.0.2.10", "192.0.2.10", true)]
    [InlineData("192.0.2.10", "192.0.2.11", false)]
    [InlineData("fd00::/8", "fd12::1", true)]
    [InlineData("[2001:db8::1]", "2001:db8::1", true)]
    [InlineData("fe80::/10", "fe80::1%2", true)] // a link-local address's scope does not count
    [InlineData("2001:db8::1", "2001:db8::2", false)]
    [InlineData("10.0.0.0/8", "ten.example", false)] // names are not resolved to match a range
    [InlineData("corp.example, 10.0.0.0/8 192.0.2.1", "192.0.2.1", true)]
    [InlineData("", "corp.example", false)]
    public void An_entry_matches_its_own_host_the_names_under_it_and_the_addresses_in_its_range(string list, string host, bool matches)
    {
        Assert.True(ProxyBypassList.TryParse(list, out var bypass, out var invalid), invalid);

        Assert.Equal(matches, bypass.Matches(host));
    }

    [Theory]
    [InlineData("10.0.0.0/33", "10.0.0.0/33")]
    [InlineData("corp.example, host:8080", "host:8080")]
    [InlineData("http://corp.example", "http://corp.example")]
    [InlineData("*", "*")]
    public void An_entry_of_no_form_is_named(string list, string entry)
    {
        Assert.False(ProxyBypassList.TryParse(list, out _, out var invalid));

        Assert.Equal(entry, invalid);
    }
}
