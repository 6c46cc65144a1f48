using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Claims;
using ModularChat.Testing.Fakes;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// A host configured as in production: <c>Auth:Authority</c> names an OpenID Connect provider (a real one on loopback)
/// whose published keys validate tokens (a local signing key left configured beside it does not count), the tenant in Entra ID's <c>tid</c> claim, roles in
/// <c>roles</c>, and tokens without a tenant refused.
/// </summary>
public sealed class IdentityProviderApp() : ModularChatApp(TestDatabase("conversations_identity_provider"))
{
    public FakeIdentityProvider Provider { get; private set; } = null!;

    protected override bool RunsAsyncProjections => false;

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Auth:Authority"] = Provider.Issuer,
        ["Auth:RequireHttpsMetadata"] = "false",
        ["Auth:TenantClaim"] = "tid",
        ["Auth:RequireTenantClaim"] = "true",
        ["Auth:RoleClaim"] = "roles",
    };

    public override async Task InitializeAsync()
    {
        Provider = await FakeIdentityProvider.StartAsync();
        await base.InitializeAsync();
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Provider.DisposeAsync();
    }
}

public sealed class IdentityProviderTests(IdentityProviderApp app) : IClassFixture<IdentityProviderApp>
{
    [Fact]
    public async Task A_token_signed_by_the_authoritys_published_key_is_accepted_and_its_tid_claim_is_the_tenant()
    {
        var (tenant, other) = (ModularChatApp.NewUser("org"), ModularChatApp.NewUser("org"));
        var alice = Client(Token(ModularChatApp.NewUser("alice"), tenant));
        var created = await alice.PostAsJsonAsync("/api/conversations", new { title = "via the identity provider" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);

        // A colleague of the same organization sees it; a caller of another organization does not.
        var colleague = await Client(Token(ModularChatApp.NewUser("bob"), tenant)).GetAsync(created.Headers.Location);
        Assert.Equal(HttpStatusCode.OK, colleague.StatusCode);
        var stranger = await Client(Token(ModularChatApp.NewUser("eve"), other)).GetAsync(created.Headers.Location);
        Assert.Equal(HttpStatusCode.NotFound, stranger.StatusCode);
    }

    [Fact]
    public async Task Only_the_configured_claim_names_the_tenant()
    {
        var tenant = ModularChatApp.NewUser("org");
        var created = await Client(Token(ModularChatApp.NewUser("alice"), tenant)).PostAsJsonAsync("/api/conversations", new { title = "t" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);

        // A 'tenant' claim (the default claim's name) next to another organization's tid does not reach the first one.
        var claims = new[] { new Claim("sub", ModularChatApp.NewUser("mallory")), new Claim("tid", ModularChatApp.NewUser("org")), new Claim("tenant", tenant) };
        var response = await Client(app.Provider.CreateToken(app.Auth.Audience, claims)).GetAsync(created.Headers.Location);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }

    [Fact]
    public async Task A_token_without_the_tenant_claim_answers_401_naming_the_claim()
    {
        var token = app.Provider.CreateToken(app.Auth.Audience, [new Claim("sub", ModularChatApp.NewUser("alice"))]);

        var problem = await (await Client(token).GetAsync("/api/conversations")).ShouldBeProblem(401);

        Assert.Contains("no 'tid' claim", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_token_naming_two_tenants_answers_401()
    {
        var claims = new[] { new Claim("sub", "alice"), new Claim("tid", ModularChatApp.NewUser("org")), new Claim("tid", ModularChatApp.NewUser("org")) };

        var problem = await (await Client(app.Provider.CreateToken(app.Auth.Audience, claims)).GetAsync("/api/conversations")).ShouldBeProblem(401);

        Assert.Contains("names 2 tenants", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Tokens_that_the_authority_did_not_sign_or_did_not_issue_for_this_service_answer_401()
    {
        var claims = new[] { new Claim("sub", "alice"), new Claim("tid", ModularChatApp.NewUser("org")) };

        var forged = await Client(app.Provider.CreateToken(app.Auth.Audience, claims, key: FakeIdentityProvider.UnknownKey())).GetAsync("/api/conversations");
        var otherIssuer = await Client(app.Provider.CreateToken(app.Auth.Audience, claims, issuer: "https://login.example.com/")).GetAsync("/api/conversations");
        var otherAudience = await Client(app.Provider.CreateToken("another-api", claims)).GetAsync("/api/conversations");
        // Signed with the local key the host is also configured with, as if the authority had issued it.
        var localKey = new Microsoft.IdentityModel.Tokens.SymmetricSecurityKey(Convert.FromBase64String(app.Auth.SigningKey!));
        var development = await Client(app.Provider.CreateToken(app.Auth.Audience, claims, key: localKey)).GetAsync("/api/conversations");

        Assert.Contains("signature", (await forged.ShouldBeProblem(401)).GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Contains("issuer", (await otherIssuer.ShouldBeProblem(401)).GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Contains("audience", (await otherAudience.ShouldBeProblem(401)).GetProperty("detail").GetString(), StringComparison.Ordinal);
        await development.ShouldBeProblem(401); // with an authority only its keys count
    }

    [Theory]
    [InlineData("true", "http://127.0.0.1:9/realms/acme", "must use https")]
    [InlineData("false", "keycloak/realms/acme", "absolute http(s) URL")]
    public async Task An_authority_the_token_handler_would_refuse_stops_the_start_instead_of_failing_every_request(
        string requireHttps, string authority, string why)
    {
        var error = await Record.ExceptionAsync(() => app.StartHostAsync(new Dictionary<string, string?>
        {
            ["Auth:Authority"] = authority,
            ["Auth:RequireHttpsMetadata"] = requireHttps,
        }));

        Assert.NotNull(error);
        Assert.Contains("Auth:Authority", error.ToString(), StringComparison.Ordinal);
        Assert.Contains(why, error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Neither_an_authority_nor_a_signing_key_stops_the_start_saying_to_set_one()
    {
        var error = await Record.ExceptionAsync(() => app.StartHostAsync(new Dictionary<string, string?>
        {
            ["Auth:Authority"] = "",
            ["Auth:SigningKey"] = "",
        }));

        Assert.NotNull(error);
        var message = Assert.Single(Exceptions.Flatten(error).OfType<Microsoft.Extensions.Options.OptionsValidationException>()).Message;
        Assert.Contains("'Auth:Authority': set Auth:Authority (production) or Auth:SigningKey", message, StringComparison.Ordinal);
        Assert.DoesNotContain("AuthOptions", message, StringComparison.Ordinal); // the options class's name, said as the value read
    }

    [Fact]
    public async Task After_the_authority_rolls_its_keys_over_tokens_signed_with_the_new_key_are_accepted()
    {
        // A provider and a node of their own: the rollover must not change the keys the other tests' node knows, nor may
        // their unknown-key tokens have used up this node's refresh (JwtBearer refreshes on a missing key at most every 5 min).
        await using var provider = await FakeIdentityProvider.StartAsync();
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Auth:Authority"] = provider.Issuer });
        var tenant = ModularChatApp.NewUser("org");
        string TokenOfProvider() => provider.CreateToken(app.Auth.Audience, [new Claim("sub", "alice"), new Claim("tid", tenant)]);
        Assert.Equal(HttpStatusCode.OK, (await Client(node, TokenOfProvider()).GetAsync("/api/conversations")).StatusCode);
        var fetched = provider.KeyRequests;

        provider.RotateKey(retireOld: true);

        // The first token with the unknown key makes the node fetch the keys again (JwtBearer's refresh on a missing key),
        // so the new key is accepted at once after that, not after the next scheduled refresh (12 hours).
        var status = await Eventually.Until(
            async () => (await Client(node, TokenOfProvider()).GetAsync("/api/conversations")).StatusCode,
            s => s == HttpStatusCode.OK, seconds: 60, what: "a token signed with the new key accepted");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.True(provider.KeyRequests > fetched);
    }

    [Fact]
    public async Task The_admin_endpoints_take_the_admin_role_from_the_configured_roles_claim()
    {
        var tenant = ModularChatApp.NewUser("org");
        var claims = new List<Claim> { new("sub", "alice"), new("tid", tenant) };

        var asUser = await Client(app.Provider.CreateToken(app.Auth.Audience, claims)).GetAsync("/api/admin/retention");
        var asRoleClaim = await Client(app.Provider.CreateToken(app.Auth.Audience, [.. claims, new Claim("role", "admin")])).GetAsync("/api/admin/retention");
        var asAdmin = await Client(app.Provider.CreateToken(app.Auth.Audience, [.. claims, new Claim("roles", "reader"), new Claim("roles", "admin")]))
            .GetAsync("/api/admin/retention");

        Assert.Equal(HttpStatusCode.Forbidden, asUser.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, asRoleClaim.StatusCode);
        Assert.Equal(HttpStatusCode.OK, asAdmin.StatusCode);
    }

    [Fact]
    public async Task While_the_authority_cannot_be_reached_requests_answer_503_not_401_and_are_served_once_it_is_back()
    {
        // A node started while the identity provider is down has no keys yet (a running one keeps those it fetched).
        await using var node = await app.StartHostAsync();
        var token = Token("alice", ModularChatApp.NewUser("org"));
        app.Provider.Unavailable = true;
        try
        {
            var down = await Client(node, token).GetAsync("/api/conversations");

            var problem = await down.ShouldBeProblem(503);
            Assert.Contains("identity provider", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
            Assert.NotNull(down.Headers.RetryAfter);
        }
        finally
        {
            app.Provider.Unavailable = false;
        }

        Assert.Equal(HttpStatusCode.OK, (await Client(node, token).GetAsync("/api/conversations")).StatusCode);
    }

    private string Token(string subject, string tenant)
        => app.Provider.CreateToken(app.Auth.Audience, [new Claim("sub", subject), new Claim("tid", tenant)]);

    private HttpClient Client(string token) => Client(app.Host, token);

    private static HttpClient Client(Alba.IAlbaHost host, string token)
    {
        var client = host.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return client;
    }
}
