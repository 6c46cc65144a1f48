using System.Net;
using System.Net.Http.Headers;
using ModularChat.Providers.Network;

namespace ModularChat.Providers.Tests;

[Collection(AppCollection.Name)]
public sealed class OutboundNetworkTests(ProvidersApp app)
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
    [InlineData("100::1", false)] // discard-only
    [InlineData("8.8.8.8", true)]
    [InlineData("2606:4700:4700::1111", true)]
    [InlineData("64:ff9b::808:808", true)] // NAT64 of 8.8.8.8
    [InlineData("2002:808:808::1", true)] // 6to4 of 8.8.8.8
    [InlineData("2001:0:4136:e378:8000:63bf:f7f7:f7f7", true)] // Teredo, server 65.54.227.120, client 8.8.8.8
    public void Only_public_addresses_count_as_public(string address, bool isPublic)
        => Assert.Equal(isPublic, OutboundNetwork.IsPublic(IPAddress.Parse(address)));
}
