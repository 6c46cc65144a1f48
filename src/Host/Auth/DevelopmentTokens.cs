using System.Security.Claims;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace ModularChat.Host.Auth;

/// <summary>Signs tokens with the local symmetric key, for development, tests and benchmarks.</summary>
public static class DevelopmentTokens
{
    /// <summary>
    /// A signed JWT for <paramref name="subject"/>, optionally with a tenant and roles, under the claim names the service reads
    /// (<see cref="AuthOptions.TenantClaim"/>, <see cref="AuthOptions.RoleClaim"/>).
    /// </summary>
    public static string Create(
        AuthOptions options, string subject, string? tenant = null, IEnumerable<string>? roles = null,
        TimeSpan? lifetime = null, DateTimeOffset? now = null)
    {
        var key = options.SigningKeyBytes()
            ?? throw new InvalidOperationException("Auth:SigningKey is not set: development tokens need the local signing key.");
        var issuedAt = (now ?? DateTimeOffset.UtcNow).UtcDateTime;
        var claims = new List<Claim> { new("sub", subject) };
        if (!string.IsNullOrWhiteSpace(tenant))
        {
            claims.Add(new Claim(options.TenantClaim, tenant));
        }

        claims.AddRange((roles ?? []).Select(r => new Claim(options.RoleClaim, r)));
        var descriptor = new SecurityTokenDescriptor
        {
            Issuer = options.Issuer,
            Audience = options.Audience,
            Subject = new ClaimsIdentity(claims),
            IssuedAt = issuedAt,
            NotBefore = issuedAt.AddSeconds(-5),
            Expires = issuedAt + (lifetime ?? TimeSpan.FromHours(12)),
            SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(key), SecurityAlgorithms.HmacSha256),
        };
        return new JsonWebTokenHandler().CreateToken(descriptor);
    }
}
