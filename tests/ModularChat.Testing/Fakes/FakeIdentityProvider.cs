using System.Security.Claims;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace ModularChat.Testing.Fakes;

/// <summary>
/// A real HTTP server on loopback that speaks what a resource server needs of an OpenID Connect provider: the discovery
/// document (<c>/.well-known/openid-configuration</c>) and the signing keys (JWKS), with RSA keys it can rotate. It
/// signs tokens (RS256) the way an identity provider would, standing in for Entra ID, Keycloak or Auth0 in tests.
/// </summary>
public sealed class FakeIdentityProvider : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Lock _gate = new();
    private List<RsaSecurityKey> _published = [];
    private RsaSecurityKey _signing;
    private int _keyRequests;

    private FakeIdentityProvider(WebApplication app)
    {
        _app = app;
        _signing = NewKey();
        _published = [_signing];
    }

    /// <summary>The issuer (<c>iss</c>) and authority to configure, e.g. http://127.0.0.1:41234.</summary>
    public string Issuer { get; private set; } = "";

    /// <summary>How many times the JWKS was fetched.</summary>
    public int KeyRequests => Volatile.Read(ref _keyRequests);

    /// <summary>While set, every request answers 503 (the provider is down).</summary>
    public bool Unavailable { get; set; }

    public static async Task<FakeIdentityProvider> StartAsync()
    {
        var app = LoopbackServer.CreateBuilder().Build();
        var provider = new FakeIdentityProvider(app);
        app.Use(async (context, next) =>
        {
            if (provider.Unavailable)
            {
                context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
                return;
            }

            await next(context);
        });
        app.MapGet("/.well-known/openid-configuration", () => Results.Json(new Dictionary<string, object>
        {
            ["issuer"] = provider.Issuer,
            ["jwks_uri"] = provider.Issuer + "/jwks",
            ["id_token_signing_alg_values_supported"] = new[] { SecurityAlgorithms.RsaSha256 },
        }));
        app.MapGet("/jwks", provider.Jwks);
        provider.Issuer = await LoopbackServer.StartAsync(app);
        return provider;
    }

    /// <summary>
    /// A token signed with the current key: <c>iss</c> this provider, the given audience and claims (a claim given more
    /// than once becomes a JSON array, as identity providers send roles).
    /// </summary>
    public string CreateToken(string audience, IEnumerable<Claim> claims, TimeSpan? lifetime = null, string? issuer = null, SecurityKey? key = null)
    {
        var now = DateTime.UtcNow;
        RsaSecurityKey signing;
        lock (_gate)
        {
            signing = _signing;
        }

        return new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = issuer ?? Issuer,
            Audience = audience,
            Subject = new ClaimsIdentity(claims),
            IssuedAt = now,
            NotBefore = now.AddSeconds(-5),
            Expires = now + (lifetime ?? TimeSpan.FromHours(1)),
            SigningCredentials = key is SymmetricSecurityKey
                ? new SigningCredentials(key, SecurityAlgorithms.HmacSha256)
                : new SigningCredentials(key ?? signing, SecurityAlgorithms.RsaSha256),
        });
    }

    /// <summary>
    /// Signs with a new key from now on and publishes it; the previous key stays published unless
    /// <paramref name="retireOld"/>, as a provider rolls its keys over.
    /// </summary>
    public void RotateKey(bool retireOld = false)
    {
        lock (_gate)
        {
            _signing = NewKey();
            _published = retireOld ? [_signing] : [.. _published, _signing];
        }
    }

    /// <summary>A key this provider never published (a forger's).</summary>
    public static RsaSecurityKey UnknownKey() => NewKey();

    private IResult Jwks()
    {
        Interlocked.Increment(ref _keyRequests);
        List<RsaSecurityKey> keys;
        lock (_gate)
        {
            keys = _published;
        }

        return Results.Json(new
        {
            keys = keys.Select(k =>
            {
                var parameters = k.Rsa.ExportParameters(includePrivateParameters: false);
                return new Dictionary<string, string>
                {
                    ["kty"] = "RSA",
                    ["use"] = "sig",
                    ["alg"] = SecurityAlgorithms.RsaSha256,
                    ["kid"] = k.KeyId,
                    ["n"] = Base64UrlEncoder.Encode(parameters.Modulus),
                    ["e"] = Base64UrlEncoder.Encode(parameters.Exponent),
                };
            }),
        });
    }

    private static RsaSecurityKey NewKey() => new(RSA.Create(2048)) { KeyId = Guid.NewGuid().ToString("N") };

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}
