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
        var byName = await allowed.AddProviderAsync(new Uri($"http://localhost:{app.Model.BaseUrl.Port}/v1"), name: "local");

        await using var strict = await app.StartHostAsync(new Dictionary<string, string?> { ["OutboundNetwork:AllowPrivateNetworks"] = "false" });
        using var client = strict.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));

        await (await client.PostJson("/api/providers", new { name = "x", kind = "openai-compatible", endpoint = app.Model.BaseUrl.ToString(), chatModel = "m" }))
            .ShouldNameField("endpoint");
        await (await client.PostJson("/api/providers", new { name = "y", kind = "openai-compatible", endpoint = "http://169.254.169.254/latest", chatModel = "m" }))
            .ShouldNameField("endpoint");
        await (await client.PostJson("/api/mcp-servers", new { name = "z", transport = "sse", url = "http://10.0.0.5/sse" })).ShouldNameField("url");

        var requestsBefore = app.Model.Requests.Count;
        var result = await (await client.PostAsync($"/api/providers/{byName.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
        Assert.False(result.Success);
        Assert.Contains("private-network", result.Error!.Message, StringComparison.Ordinal);
        Assert.Equal(requestsBefore, app.Model.Requests.Count);
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
    [InlineData("8.8.8.8", true)]
    [InlineData("2606:4700:4700::1111", true)]
    public void Only_public_addresses_count_as_public(string address, bool isPublic)
        => Assert.Equal(isPublic, OutboundNetwork.IsPublic(IPAddress.Parse(address)));
}
