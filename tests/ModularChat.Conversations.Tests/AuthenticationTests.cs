using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using ModularChat.Host.Auth;

namespace ModularChat.Conversations.Tests;

[Collection(AppCollection.Name)]
public sealed class AuthenticationTests(ConversationsApp app)
{
    [Fact]
    public async Task No_token_answers_401_saying_a_token_is_required()
    {
        using var client = app.Host.Server.CreateClient();
        var problem = await (await client.GetAsync("/api/conversations")).ShouldBeProblem(401);
        Assert.Contains("token is required", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_token_command_keeps_every_repeated_role_and_names_claims_as_the_service_reads_them()
    {
        var (exit, output) = await app.RunHostCommandAsync(null, "token", "--sub", "carol", "--role", "admin", "--role", "operator");
        Assert.True(exit == 0, output);
        // Standard output (the token alone on its line) comes first, then standard error (what it holds).
        static string TokenIn(string output) => output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Last(line => line.StartsWith("eyJ", StringComparison.Ordinal) && line.Count(c => c == '.') == 2);
        var token = TokenIn(output);
        Assert.Equal(["admin", "operator"], new Microsoft.IdentityModel.JsonWebTokens.JsonWebToken(token).Claims.Where(c => c.Type == "role").Select(c => c.Value));
        using var client = app.Host.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/admin/retention")).StatusCode); // the admin role counts

        // A deployment that reads the tenant and roles from other claims gets its development tokens in those claims.
        (exit, output) = await app.RunHostCommandAsync(
            new Dictionary<string, string> { ["Auth__TenantClaim"] = "tid", ["Auth__RoleClaim"] = "roles" },
            "token", "--sub", "carol", "--tenant", "acme", "--role", "admin");
        Assert.True(exit == 0, output);
        var renamed = new Microsoft.IdentityModel.JsonWebTokens.JsonWebToken(TokenIn(output));
        Assert.Equal("acme", renamed.Claims.Single(c => c.Type == "tid").Value);
        Assert.Equal("admin", renamed.Claims.Single(c => c.Type == "roles").Value);
        Assert.DoesNotContain(renamed.Claims, c => c.Type is "tenant" or "role");
    }

    [Fact]
    public async Task The_token_command_refuses_a_blank_tenant_or_subject_instead_of_printing_a_token_for_another_tenant()
    {
        foreach (var (flags, message) in new[] { (new[] { "--sub", "carol", "--tenant", " " }, "--tenant needs a tenant id"), (["--sub", ""], "--sub needs a subject") })
        {
            var (exit, output) = await app.RunHostCommandAsync(null, ["token", .. flags]);
            Assert.True(exit != 0, output);
            Assert.Contains(message, output, StringComparison.Ordinal);
            Assert.DoesNotContain("eyJ", output, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Repeated_role_flags_are_merged_for_the_token_command_only()
    {
        Assert.Equal(["token", "--sub", "a", "--minutes", "5", "--role", "x", "y", "z"],
            TokenCommand.MergeRepeatedRoles(["token", "--role", "x", "--sub", "a", "-r", "y", "z", "--minutes", "5"]));
        Assert.Equal(["token", "--sub", "a"], TokenCommand.MergeRepeatedRoles(["token", "--sub", "a"]));
        Assert.Equal(["projections", "--role", "x", "--role", "y"], TokenCommand.MergeRepeatedRoles(["projections", "--role", "x", "--role", "y"]));
    }

    [Fact]
    public async Task An_expired_token_answers_401_saying_it_expired()
    {
        var expired = DevelopmentTokens.Create(app.Auth, "alice", lifetime: TimeSpan.FromMinutes(5), now: DateTimeOffset.UtcNow.AddHours(-1));
        var problem = await (await Send(expired)).ShouldBeProblem(401);
        Assert.Contains("expired", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_token_with_a_wrong_signature_answers_401()
    {
        var forged = DevelopmentTokens.Create(new AuthOptions { SigningKey = Convert.ToBase64String(RandomNumberGenerator.GetBytes(48)) }, "alice");
        var problem = await (await Send(forged)).ShouldBeProblem(401);
        Assert.Contains("signature", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_token_for_another_audience_answers_401()
    {
        var other = DevelopmentTokens.Create(new AuthOptions { SigningKey = app.Auth.SigningKey, Audience = "someone-else" }, "alice");
        await (await Send(other)).ShouldBeProblem(401);
    }

    [Theory]
    [InlineData("alice", "a\0b", "control characters")]
    [InlineData("alice", "tenant\n2", "control characters")]
    [InlineData("alice", " acme", "white space")]
    [InlineData("alice", "acme\u00A0", "white space")]
    [InlineData(" alice", null, "white space")] // the subject is the tenant
    [InlineData("alice", "acme corp", null)] // accepted: white space inside
    [InlineData("alice", null, null)] // accepted: the subject is the tenant
    [InlineData("", null, "names no tenant")]
    // Another tenant than "acme" that reads as "acme", or that breaks or turns a log line.
    [InlineData("alice", "acme\u200B", "invisible or layout character (U+200B)")]
    [InlineData("alice", "acme\u202Eevil", "invisible or layout character (U+202E)")]
    [InlineData("alice", "a\u2028fail: forged", "invisible or layout character (U+2028)")]
    [InlineData("alice\u2060", null, "invisible or layout character (U+2060)")] // the subject is the tenant
    [InlineData("alice", "ACME Ünïcödé 株式会社", null)] // accepted: letters of any script
    public async Task A_token_whose_tenant_cannot_be_used_answers_401_saying_why(string subject, string? tenant, string? why)
    {
        var response = await Send(DevelopmentTokens.Create(app.Auth, subject, tenant));

        if (why is null)
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return;
        }

        var problem = await response.ShouldBeProblem(401);
        Assert.Contains(why, problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("", "acme")] // the first value was read: blank, so the subject became the tenant
    public async Task A_token_whose_tenant_claim_is_empty_answers_401_instead_of_becoming_its_subject_s_tenant(params string[] tenants)
    {
        var key = new SymmetricSecurityKey(app.Auth.SigningKeyBytes()!);
        var token = new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = app.Auth.Issuer,
            Audience = app.Auth.Audience,
            Claims = new Dictionary<string, object> { ["sub"] = ModularChatApp.NewUser("alice"), ["tenant"] = tenants.Length == 1 ? tenants[0] : tenants },
            Expires = DateTime.UtcNow.AddMinutes(5),
            SigningCredentials = new SigningCredentials(key, SecurityAlgorithms.HmacSha256),
        });

        var problem = await (await Send(token)).ShouldBeProblem(401);

        Assert.Contains("'tenant' claim is empty", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("[]", "'tenant' claim is empty")]
    [InlineData("null", "'tenant' claim is empty")]
    [InlineData("true", "'tenant' claim is not a string (a boolean)")]
    [InlineData("4.2", "'tenant' claim is not a string (a number with a fraction)")]
    [InlineData("""{"id":"acme"}""", "'tenant' claim is not a string (a JSON object or list)")]
    [InlineData("42", null)] // accepted: a whole number, as some issuers write organization ids
    public async Task A_token_whose_tenant_claim_is_no_text_answers_401_instead_of_becoming_its_subject_s_tenant_or_the_values_text(string tenant, string? why)
    {
        var subject = ModularChatApp.NewUser("alice");
        var response = await Send(Signed($$"""{"sub":"{{subject}}","tenant":{{tenant}}}"""));

        // It used to take [] and null for no claim (the subject became the tenant) and true, 4.2 or the object as text.
        if (why is null)
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var created = await app.Host.Server.CreateClient().SendAsync(new HttpRequestMessage(HttpMethod.Post, "/api/conversations")
            {
                Headers = { Authorization = new AuthenticationHeaderValue("Bearer", Signed($$"""{"sub":"{{subject}}","tenant":{{tenant}}}""")) },
                Content = JsonContent.Create(new { title = "numbered" }),
            });
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            var listed = await (await Send(app.Token(subject, tenant))).Content.ReadAsStringAsync();
            Assert.Contains("numbered", listed, StringComparison.Ordinal); // the tenant "42", as if written "42"
            return;
        }

        var problem = await response.ShouldBeProblem(401);
        Assert.Contains(why, problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    /// <summary>A token with exactly <paramref name="claims"/> (JSON) besides the issuer, audience and expiry, signed with the service's key.</summary>
    private string Signed(string claims)
    {
        var payload = System.Text.Json.Nodes.JsonNode.Parse(claims)!.AsObject();
        payload["iss"] = app.Auth.Issuer;
        payload["aud"] = app.Auth.Audience;
        payload["exp"] = DateTimeOffset.UtcNow.AddMinutes(5).ToUnixTimeSeconds();
        var unsigned = Base64UrlEncoder.Encode("""{"alg":"HS256","typ":"JWT"}""") + "." + Base64UrlEncoder.Encode(payload.ToJsonString());
        var signature = HMACSHA256.HashData(app.Auth.SigningKeyBytes()!, System.Text.Encoding.ASCII.GetBytes(unsigned));
        return unsigned + "." + Base64UrlEncoder.Encode(signature);
    }

    [Fact]
    public async Task A_token_with_a_tenant_over_the_maximum_length_answers_401()
    {
        var problem = await (await Send(DevelopmentTokens.Create(app.Auth, "alice", new string('t', 257)))).ShouldBeProblem(401);
        Assert.Contains("longer than 256", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);

        var longest = await Send(DevelopmentTokens.Create(app.Auth, "alice", new string('t', 256)));
        Assert.Equal(HttpStatusCode.OK, longest.StatusCode);
    }

    [Fact]
    public async Task A_valid_token_is_accepted()
    {
        var response = await Send(app.Token(ModularChatApp.NewUser()));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    private Task<HttpResponseMessage> Send(string token)
    {
        var client = app.Host.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return client.GetAsync("/api/conversations");
    }
}
