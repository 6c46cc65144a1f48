using System.Text;
using FluentValidation;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Security;

namespace ModularChat.Host.Auth;

/// <summary>
/// JWT bearer settings (section <c>Auth</c>). Production: set <see cref="Authority"/> (the issuer's
/// OpenID metadata and JWKS are fetched from it). Local use: a symmetric <see cref="SigningKey"/>,
/// which <c>./build.sh</c> generates per clone and which <c>token</c> signs development tokens with.
/// </summary>
public sealed class AuthOptions
{
    public const string Section = "Auth";

    /// <summary>OpenID Connect authority (issuer URL); its JWKS validates tokens.</summary>
    public string? Authority { get; set; }

    /// <summary>Symmetric HMAC-SHA256 key (at least 32 bytes; base64 or plain text) for local tokens.</summary>
    public string? SigningKey { get; set; }

    public string Issuer { get; set; } = "modularchat-dev";

    public string Audience { get; set; } = "modularchat";

    /// <summary>Require https for the authority's metadata (turn off only for a local identity provider).</summary>
    public bool RequireHttpsMetadata { get; set; } = true;

    /// <summary>Tolerated clock difference between us and the token issuer.</summary>
    public TimeSpan ClockSkew { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Role (the value of a <see cref="RoleClaim"/> claim) that grants the admin endpoints of the caller's own tenant.</summary>
    public string AdminRole { get; set; } = "admin";

    /// <summary>
    /// Role that grants the operations on every tenant at once: rotating the encryption key, rebuilding the search read
    /// model, summary sweeps. Give it to the service's operators, never to a tenant's administrators.
    /// </summary>
    public string OperatorRole { get; set; } = "operator";

    /// <summary>
    /// The role a caller needs to add, change, delete or test its tenant's providers and MCP servers (which hold the API
    /// keys and secrets its chat turns use, and run stdio programs), e.g. the admin role; empty (the default): any caller
    /// of the tenant. Reading them (secrets masked) and chatting need no role.
    /// </summary>
    public string? SettingsRole { get; set; }

    /// <summary>
    /// The claim that names the caller's tenant. Identity providers name it differently (Entra ID: <c>tid</c>; Auth0 and
    /// Keycloak: whatever claim a mapper adds); its value becomes the tenant id.
    /// </summary>
    public string TenantClaim { get; set; } = "tenant";

    /// <summary>
    /// Refuse a token without a <see cref="TenantClaim"/> instead of making its subject (<c>sub</c>) the tenant. Turn it on
    /// where every caller belongs to an organization: a subject can then never be taken for a tenant's id.
    /// </summary>
    public bool RequireTenantClaim { get; set; }

    /// <summary>The claim that holds the caller's roles (Entra ID: <c>roles</c>); a JSON array gives several.</summary>
    public string RoleClaim { get; set; } = "role";

    internal byte[]? SigningKeyBytes()
    {
        if (string.IsNullOrEmpty(SigningKey))
        {
            return null;
        }

        var buffer = new byte[SigningKey.Length];
        return Convert.TryFromBase64String(SigningKey, buffer, out var written) && written >= 32
            ? buffer[..written]
            : Encoding.UTF8.GetBytes(SigningKey);
    }
}

internal sealed class AuthOptionsValidator : AbstractValidator<AuthOptions>
{
    public AuthOptionsValidator()
    {
        RuleFor(o => o)
            .Must(o => !string.IsNullOrWhiteSpace(o.Authority) || !string.IsNullOrEmpty(o.SigningKey))
            .WithName("Authority")
            .WithMessage("set Auth:Authority (production) or Auth:SigningKey (local use); ./build.sh run sets a development key");
        // Checked here, not at the first request: JwtBearer reads the authority when a request is authenticated, so an
        // authority it refuses made every request answer 500, health checks included, on a node that had started.
        RuleFor(o => o.Authority)
            .Must(a => HttpUri(a) is not null)
            .When(o => !string.IsNullOrWhiteSpace(o.Authority))
            .WithMessage("must be the identity provider's absolute http(s) URL, e.g. https://login.example.com/realms/acme");
        RuleFor(o => o.Authority)
            .Must((o, a) => !o.RequireHttpsMetadata || HttpUri(a) is not { Scheme: "http" })
            .WithMessage("must use https, unless Auth:RequireHttpsMetadata is false (the keys that sign tokens must not be fetched in clear text)");
        RuleFor(o => o.SigningKeyBytes())
            .Must(k => k is null || k.Length >= 32)
            .WithName("SigningKey")
            .WithMessage("must be at least 32 bytes (256 bits)");
        RuleFor(o => o.Audience).NotEmpty();
        RuleFor(o => o.Issuer).NotEmpty();
        RuleFor(o => o.TenantClaim).NotEmpty();
        RuleFor(o => o.RoleClaim).NotEmpty();
        RuleFor(o => o.AdminRole).NotEmpty();
        RuleFor(o => o.OperatorRole).NotEmpty().NotEqual(o => o.AdminRole).WithMessage("must differ from Auth:AdminRole (a tenant's administrators must not act on every tenant)");
        RuleFor(o => o.ClockSkew).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromMinutes(10));
    }

    /// <summary>The authority as an absolute http(s) URL, else null.</summary>
    private static Uri? HttpUri(string? authority)
        => Uri.TryCreate(authority?.Trim(), UriKind.Absolute, out var uri) && uri.Scheme is "https" or "http" ? uri : null;
}

/// <summary>Outside Development, the signing key published in docker-compose.yml is refused (<see cref="PublishedKeys"/>): anyone could sign tokens with it.</summary>
internal sealed class PublishedSigningKeyRefused(IHostEnvironment environment) : IValidateOptions<AuthOptions>
{
    public ValidateOptionsResult Validate(string? name, AuthOptions options)
        => !environment.IsDevelopment() && PublishedKeys.IsPublished(options.SigningKey)
            ? ValidateOptionsResult.Fail(PublishedKeys.Refusal($"{AuthOptions.Section}:SigningKey", environment.EnvironmentName))
            : ValidateOptionsResult.Success;
}
