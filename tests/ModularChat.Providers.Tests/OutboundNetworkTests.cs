using System.Net;
using System.Net.Http.Headers;
using ModularChat.Providers.Network;

namespace ModularChat.Providers.Tests;

[Collection(McpCollection.Name)]
public sealed class OutboundNetworkTests(ProvidersMcpApp app)
{
    [Fact]
    public async Task Without_private_networks_allowed_loopback_targets_are_refused_when_stored_and_when_connecting()
    {
        var user = ModularChatApp.NewUser();
        using var allowed = app.Client(user);
        // Stored through the permissive host (the tests' own), by name: the strict node must refuse it when it connects.
        var key = $"sk-local-{Guid.NewGuid():N}";
        var byName = await allowed.AddProviderAsync(new Uri($"http://localhost:{app.Model.BaseUrl.Port}/v1"), key, name: "local");

        await using var strict = await app.StartHostAsync(new Dictionary<string, string?> { ["OutboundNetwork:AllowPrivateNetworks"] = "false" });
        using var client = strict.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));

        await (await client.PostJson("/api/providers", new { name = "x", kind = "openai-compatible", endpoint = app.Model.BaseUrl.ToString(), chatModel = "m" }))
            .ShouldNameField("endpoint");
        await (await client.PostJson("/api/providers", new { name = "y", kind = "openai-compatible", endpoint = "http://169.254.169.254/latest", chatModel = "m" }))
            .ShouldNameField("endpoint");
        await (await client.PostJson("/api/mcp-servers", new { name = "z", transport = "sse", url = "http://10.0.0.5/sse" })).ShouldNameField("url");
        // Loopback carried inside IPv6: NAT64 and 6to4.
        await (await client.PostJson("/api/providers", new { name = "n", kind = "openai-compatible", endpoint = $"http://[64:ff9b::7f00:1]:{app.Model.BaseUrl.Port}/v1", chatModel = "m" }))
            .ShouldNameField("endpoint");
        await (await client.PostJson("/api/mcp-servers", new { name = "s", transport = "streamable-http", url = $"http://[2002:7f00:1::]:{app.Mcp.BaseUrl.Port}/mcp" }))
            .ShouldNameField("url");

        var result = await (await client.PostAsync($"/api/providers/{byName.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
        Assert.False(result.Success);
        Assert.Contains("private-network", result.Error!.Message, StringComparison.Ordinal);
        Assert.Equal(0, app.Model.RequestsWith(key)); // nothing with the provider's key reached the model
    }

    [Fact]
    public async Task A_name_whose_private_addresses_are_left_out_is_reported_by_the_rule_not_as_a_refused_connection()
    {
        // This machine's own name: loopback (where the fakes listen) and usually its interface's address too. Where the rule
        // leaves out the private ones, the connection goes to the rest, if any, and nothing listens there either.
        var name = Dns.GetHostName();
        var user = ModularChatApp.NewUser();
        using var allowed = app.Client(user);
        var provider = await allowed.AddProviderAsync(new Uri($"http://{name}:{app.Model.BaseUrl.Port}/v1"), $"sk-own-{Guid.NewGuid():N}", name: "own");
        var server = await allowed.AddMcpServerAsync("own", $"http://{name}:{app.Mcp.BaseUrl.Port}/mcp");

        await using var strict = await app.StartHostAsync(new Dictionary<string, string?> { ["OutboundNetwork:AllowPrivateNetworks"] = "false" });
        using var client = strict.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));

        var tested = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
        var listed = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        // They said "the connection to vm:5392 was refused" and "nothing is listening there".
        Assert.False(tested.Success);
        Assert.Contains("(OutboundNetwork:AllowPrivateNetworks is off)", tested.Error!.Message, StringComparison.Ordinal);
        Assert.False(listed.Success);
        Assert.Contains("(OutboundNetwork:AllowPrivateNetworks is off)", listed.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("nothing is listening", listed.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_provider_stored_with_http_is_refused_when_connecting_once_http_is_turned_off()
    {
        var user = ModularChatApp.NewUser();
        using var allowed = app.Client(user);
        var key = $"sk-plain-{Guid.NewGuid():N}";
        var provider = await allowed.AddProviderAsync(app.Model.BaseUrl, key, name: "plain"); // http, allowed when stored

        await using var strict = await app.StartHostAsync(new Dictionary<string, string?> { ["OutboundNetwork:AllowHttp"] = "false" });
        using var client = strict.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Contains("OutboundNetwork:AllowHttp", result.Error!.Message, StringComparison.Ordinal);
        Assert.Equal(0, app.Model.RequestsWith(key)); // the key never went out in clear text
    }

    [Fact]
    public async Task Through_the_configured_proxy_providers_and_MCP_servers_are_reached_and_the_address_rules_judge_the_servers_named()
    {
        // Public addresses that only the proxy reaches (it routes them to the loopback fakes; nothing connects to them).
        var modelPort = app.Model.BaseUrl.Port;
        const string password = "pr0xy-pa55-9d4e7c";
        using var proxy = ForwardProxy.Start(
            new Dictionary<string, int> { ["1.2.3.7:80"] = modelPort, ["1.2.3.8:80"] = app.Mcp.BaseUrl.Port, ["1.2.3.9:443"] = modelPort },
            credentials: ("egress", password));
        var user = ModularChatApp.NewUser();
        using var allowed = app.Client(user);
        var privateKey = $"sk-private-{Guid.NewGuid():N}";
        var toPrivate = await allowed.AddProviderAsync(new Uri("http://10.0.0.5/v1"), privateKey, name: "in-house"); // stored where allowed
        var toDocumentation = await allowed.AddProviderAsync(new Uri("http://192.0.2.2/v1"), $"sk-doc-{Guid.NewGuid():N}", name: "documentation");

        await using var node = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["OutboundNetwork:AllowPrivateNetworks"] = "false",
            ["OutboundNetwork:Proxy"] = proxy.AddressWith("egress", password),
        });
        using var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));

        var key = $"sk-proxied-{Guid.NewGuid():N}";
        var provider = await client.AddProviderAsync(new Uri($"http://1.2.3.7{app.Model.BaseUrl.AbsolutePath}"), key, name: "proxied");
        var tested = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
        Assert.True(tested.Success, tested.Error?.Message);
        Assert.True(app.Model.RequestsWith(key) > 0);
        Assert.Contains(proxy.Served, r => r.StartsWith("POST http://1.2.3.7/", StringComparison.Ordinal));
        Assert.True(proxy.Challenged > 0); // it asked for credentials, and they were given

        var server = await client.AddMcpServerAsync("calculator", $"http://1.2.3.8{new Uri(app.Mcp.StreamableHttpUrl).AbsolutePath}");
        var listed = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);
        Assert.True(listed.Success, listed.Error);
        Assert.NotEmpty(listed.Tools);
        Assert.Contains(proxy.Served, r => r.StartsWith("POST http://1.2.3.8/", StringComparison.Ordinal));

        // https goes through a tunnel (CONNECT): the fake speaks plain http, so the handshake fails and no key is sent.
        var tlsKey = $"sk-tunnel-{Guid.NewGuid():N}";
        var tunnelled = await client.AddProviderAsync(new Uri($"https://1.2.3.9{app.Model.BaseUrl.AbsolutePath}"), tlsKey, name: "tunnelled");
        var overTls = await (await client.PostAsync($"/api/providers/{tunnelled.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
        Assert.False(overTls.Success);
        Assert.Contains("CONNECT 1.2.3.9:443", proxy.Served);
        Assert.Equal(0, app.Model.RequestsWith(tlsKey));

        // A private target is refused here, before the proxy (which would reach it) sees the request.
        var refused = await (await client.PostAsync($"/api/providers/{toPrivate.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
        Assert.False(refused.Success);
        Assert.Contains("private-network", refused.Error!.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(proxy.Served, r => r.Contains("10.0.0.5", StringComparison.Ordinal));

        // So is a documentation address (never routed on the internet: someone's own network, or this machine's interface).
        var refusedToo = await (await client.PostAsync($"/api/providers/{toDocumentation.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
        Assert.False(refusedToo.Success);
        Assert.Contains("private-network", refusedToo.Error!.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(proxy.Served, r => r.Contains("192.0.2.2", StringComparison.Ordinal));

        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(password, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("proxy.example:3128")]
    [InlineData("https://egress:hunter2-proxy@proxy.example:3128")] // https to the proxy is not offered
    [InlineData("http://egress:hunter2-proxy@proxy.example:3128/path")]
    [InlineData("socks5://proxy.example:1080")]
    public async Task A_proxy_setting_that_is_not_an_http_proxy_address_stops_the_start_naming_it_but_not_its_password(string proxy)
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { ["OutboundNetwork:Proxy"] = proxy }));

        Assert.Contains(Exceptions.Flatten(error),
            e => e is Microsoft.Extensions.Options.OptionsValidationException && e.Message.Contains("Proxy", StringComparison.Ordinal));
        Assert.DoesNotContain("hunter2", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Targets_on_the_proxy_bypass_list_are_reached_directly_and_the_others_through_the_proxy()
    {
        // The proxy would reach every one of these (it routes them to the fake model), so only the bypass list keeps one from it.
        var modelPort = app.Model.BaseUrl.Port;
        using var proxy = ForwardProxy.Start(new Dictionary<string, int>
        {
            ["models.public.invalid:80"] = modelPort, ["ollama.corp.invalid:80"] = modelPort, ["corp.invalid.example:80"] = modelPort,
        });
        var user = ModularChatApp.NewUser();
        await using var node = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["OutboundNetwork:Proxy"] = proxy.Address.ToString(),
            ["OutboundNetwork:ProxyBypass"] = ".corp.invalid, 198.51.100.0/24",
        });
        using var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));
        var path = app.Model.BaseUrl.AbsolutePath;

        // Not on the list: through the proxy. A name that merely contains a listed one is not under it.
        foreach (var host in new[] { "models.public.invalid", "corp.invalid.example" })
        {
            var key = $"sk-proxied-{Guid.NewGuid():N}";
            var provider = await client.AddProviderAsync(new Uri($"http://{host}{path}"), key, name: host);
            var tested = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
            Assert.True(tested.Success, tested.Error?.Message);
            Assert.Contains(proxy.Served, r => r.StartsWith($"POST http://{host}/", StringComparison.Ordinal));
            Assert.True(app.Model.RequestsWith(key) > 0);
        }

        // Under a listed name: directly, where the name does not resolve, so the test fails without the proxy seeing it.
        var directKey = $"sk-direct-{Guid.NewGuid():N}";
        var direct = await client.AddProviderAsync(new Uri($"http://ollama.corp.invalid{path}"), directKey, name: "in-house");
        var failed = await (await client.PostAsync($"/api/providers/{direct.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
        Assert.False(failed.Success);
        Assert.DoesNotContain(proxy.Served, r => r.Contains("ollama.corp.invalid", StringComparison.Ordinal));
        Assert.Equal(0, app.Model.RequestsWith(directKey));
    }

    [Fact]
    public async Task A_proxy_bypass_entry_that_is_no_host_address_or_range_stops_the_start_naming_it()
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?>
        {
            ["OutboundNetwork:Proxy"] = "http://proxy.example:3128", ["OutboundNetwork:ProxyBypass"] = "corp.example, 10.0.0.0/33",
        }));

        Assert.Contains(Exceptions.Flatten(error), e => e is Microsoft.Extensions.Options.OptionsValidationException
            && e.Message.Contains("ProxyBypass", StringComparison.Ordinal) && e.Message.Contains("'10.0.0.0/33'", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("127.0.0.1", false)]
    [InlineData("10.1.2.3", false)]
    [InlineData("172.20.0.1", false)]
    [InlineData("192.168.1.1", false)]
    [InlineData("169.254.169.254", false)]
    [InlineData("100.64.0.1", false)]
    [InlineData("::1", false)]
    [InlineData("fd00::1", false)]
    [InlineData("fe80::1", false)]
    [InlineData("::ffff:10.0.0.1", false)]
    [InlineData("64:ff9b::7f00:1", false)] // NAT64 of 127.0.0.1
    [InlineData("64:ff9b::a9fe:a9fe", false)] // NAT64 of 169.254.169.254
    [InlineData("64:ff9b:1::808:808", false)] // local-use NAT64, whatever it carries
    [InlineData("2002:7f00:1::", false)] // 6to4 of 127.0.0.1
    [InlineData("2002:c0a8:101::1", false)] // 6to4 of 192.168.1.1
    [InlineData("2001:0:4136:e378:8000:63bf:80ff:fffe", false)] // Teredo, client 127.0.0.1 (inverted)
    [InlineData("2001:0:a00:1::f7f7:f7f7", false)] // Teredo, server 10.0.0.1
    [InlineData("::127.0.0.1", false)] // IPv4-compatible
    [InlineData("::a00:1", false)] // IPv4-compatible 10.0.0.1
    [InlineData("::ffff:0:7f00:1", false)] // IPv4-translated
    [InlineData("2001:db8::1", false)] // documentation
    [InlineData("3fff:fff::1", false)] // documentation (RFC 9637)
    [InlineData("192.0.2.2", false)] // documentation (TEST-NET-1), this machine's own interface on some hosts
    [InlineData("198.51.100.7", false)] // documentation (TEST-NET-2)
    [InlineData("203.0.113.7", false)] // documentation (TEST-NET-3)
    [InlineData("::ffff:203.0.113.7", false)]
    [InlineData("64:ff9b::c000:202", false)] // NAT64 of 192.0.2.2
    [InlineData("192.0.3.1", true)]
    [InlineData("203.0.114.1", true)]
    [InlineData("4000::1", true)]
    [InlineData("100::1", false)] // discard-only
    [InlineData("8.8.8.8", true)]
    [InlineData("2606:4700:4700::1111", true)]
    [InlineData("64:ff9b::808:808", true)] // NAT64 of 8.8.8.8
    [InlineData("2002:808:808::1", true)] // 6to4 of 8.8.8.8
    [InlineData("2001:0:4136:e378:8000:63bf:f7f7:f7f7", true)] // Teredo, server 65.54.227.120, client 8.8.8.8
    public void Only_public_addresses_count_as_public(string address, bool isPublic)
        => Assert.Equal(isPublic, OutboundNetwork.IsPublic(IPAddress.Parse(address)));
}

/// <summary>
/// Outbound calls and a system proxy: the test sets the process-wide <see cref="HttpClient.DefaultProxy"/>, so it runs in a
/// collection that runs alone (<see cref="SystemProxyCollection"/>), where no other test's calls go through that proxy.
/// </summary>
[Collection(SystemProxyCollection.Name)]
public sealed class SystemProxyTests(SystemProxyApp app)
{
    [Fact]
    public async Task Outbound_calls_do_not_go_through_a_system_proxy_where_the_address_rules_would_judge_the_proxy()
    {
        using var proxy = SilentServer.Start();
        var previous = HttpClient.DefaultProxy;
        HttpClient.DefaultProxy = new EveryRequest(new Uri(proxy.Url).GetLeftPart(UriPartial.Authority));
        try
        {
            // A node started now (its outbound client is made after the proxy is set, as with HTTP_PROXY in its environment).
            await using var node = await app.StartHostAsync();
            var user = ModularChatApp.NewUser();
            using var client = node.Server.CreateClient();
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));
            var provider = await client.AddProviderAsync(app.Model.BaseUrl);

            var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

            Assert.True(result.Success, result.Error?.Message);
            Assert.Equal(0, proxy.Accepted);
        }
        finally
        {
            HttpClient.DefaultProxy = previous;
        }
    }

    /// <summary>A proxy for every request, loopback ones included (WebProxy leaves those out).</summary>
    private sealed class EveryRequest(string proxy) : IWebProxy
    {
        public ICredentials? Credentials { get; set; }

        public Uri GetProxy(Uri destination) => new(proxy);

        public bool IsBypassed(Uri host) => false;
    }
}
