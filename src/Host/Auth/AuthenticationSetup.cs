using System.Globalization;
using System.Security.Claims;
using System.Text.Json;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.AspNetCore.Authorization;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Options;
using ModularChat.BuildingBlocks.Security;
using ModularChat.BuildingBlocks.Tenancy;

namespace ModularChat.Host.Auth;

internal static class AuthenticationSetup
{
    public static IServiceCollection AddModularChatAuthentication(this IServiceCollection services)
    {
        services.AddValidatedOptions<AuthOptions, AuthOptionsValidator>(AuthOptions.Section);
        services.AddSingleton<IValidateOptions<AuthOptions>, PublishedSigningKeyRefused>();
        services.AddSingleton<IConfigureOptions<JwtBearerOptions>, ConfigureJwtBearer>();
        services.AddSingleton<IConfigureOptions<AuthorizationOptions>, ConfigureAuthorization>();
        services.AddAuthentication(JwtBearerDefaults.AuthenticationScheme).AddJwtBearer();
        services.AddAuthorization();
        services.AddSingleton<IAuthorizationMiddlewareResultHandler, ForbiddenProblems>();
        return services;
    }

    private sealed class ConfigureAuthorization(IOptions<AuthOptions> auth) : IConfigureOptions<AuthorizationOptions>
    {
        public void Configure(AuthorizationOptions options)
        {
            // Everything needs a valid token unless it says otherwise (health, API page).
            options.FallbackPolicy = new AuthorizationPolicyBuilder().RequireAuthenticatedUser().Build();
            options.AddPolicy(Policies.Admin, p => p.RequireAuthenticatedUser().RequireRole(auth.Value.AdminRole));
            options.AddPolicy(Policies.Operator, p => p.RequireAuthenticatedUser().RequireRole(auth.Value.OperatorRole));
            options.AddPolicy(Policies.TenantSettings, p =>
            {
                p.RequireAuthenticatedUser();
                if (auth.Value.SettingsRole?.Trim() is { Length: > 0 } role)
                {
                    p.RequireRole(role);
                }
            });
        }
    }

    private sealed class ConfigureJwtBearer(IOptions<AuthOptions> auth) : IConfigureNamedOptions<JwtBearerOptions>
    {
        public void Configure(JwtBearerOptions options) => Configure(JwtBearerDefaults.AuthenticationScheme, options);

        public void Configure(string? name, JwtBearerOptions options)
        {
            var settings = auth.Value;
            options.MapInboundClaims = false;
            var key = settings.SigningKeyBytes();
            if (!string.IsNullOrWhiteSpace(settings.Authority))
            {
                options.Authority = settings.Authority.Trim();
                options.RequireHttpsMetadata = settings.RequireHttpsMetadata;
            }

            options.TokenValidationParameters = new TokenValidationParameters
            {
                ValidateIssuer = true,
                ValidIssuer = string.IsNullOrWhiteSpace(settings.Authority) ? settings.Issuer : null,
                ValidateAudience = true,
                ValidAudience = settings.Audience,
                ValidateLifetime = true,
                RequireExpirationTime = true,
                ClockSkew = settings.ClockSkew,
                // With an authority only its published keys count: a local key left configured beside it (compose's
                // default, a development key) would let whoever knows it sign tokens for any tenant.
                IssuerSigningKey = key is null || !string.IsNullOrWhiteSpace(settings.Authority) ? null : new SymmetricSecurityKey(key),
                ValidateIssuerSigningKey = true,
                NameClaimType = "sub",
                RoleClaimType = settings.RoleClaim,
            };
            options.Events = new JwtBearerEvents
            {
                OnChallenge = WriteProblemAsync,
                OnTokenValidated = context => RequireUsableTenant(context, settings),
            };
        }

        /// <summary>
        /// The tenant is read from the configured claim (<see cref="AuthOptions.TenantClaim"/>), copied to the claim the
        /// service reads (<see cref="TenantContext.TenantClaim"/>); a token whose tenant cannot be used is refused here,
        /// before any request reads or writes with it.
        /// </summary>
        private static Task RequireUsableTenant(TokenValidatedContext context, AuthOptions settings)
        {
            if (context.Principal?.Identity is not ClaimsIdentity identity)
            {
                return Task.CompletedTask;
            }

            var claims = identity.FindAll(settings.TenantClaim).ToList();
            var values = claims.Select(c => c.Value).ToList();
            var named = values.Where(v => !string.IsNullOrWhiteSpace(v)).Distinct(StringComparer.Ordinal).ToList();
            if (settings.TenantClaim != TenantContext.TenantClaim)
            {
                foreach (var claim in identity.FindAll(TenantContext.TenantClaim).ToList())
                {
                    identity.RemoveClaim(claim); // only the configured claim names the tenant
                }

                if (named.Count == 1)
                {
                    identity.AddClaim(new Claim(TenantContext.TenantClaim, named[0]));
                }
            }

            var reason = ClaimProblem(context.SecurityToken, claims, settings.TenantClaim) ?? named.Count switch
            {
                > 1 => $"it names {named.Count} tenants ('{settings.TenantClaim}'): a caller acts for one",
                0 when settings.RequireTenantClaim => $"it has no '{settings.TenantClaim}' claim, which names the tenant (Auth:RequireTenantClaim)",
                _ => TenantContext.Unusable(TenantContext.FromPrincipal(context.Principal), settings.TenantClaim),
            };
            if (reason is not null)
            {
                context.Fail(new UnusableTenantException($"The bearer token is valid, but {reason}."));
            }

            return Task.CompletedTask;
        }

        /// <summary>Why the tenant claim's values (<paramref name="claims"/>) name no usable tenant, whatever they say; null when they may.</summary>
        private static string? ClaimProblem(SecurityToken? token, List<Claim> claims, string name)
        {
            // A blank value names no tenant: taken for none, the caller became the tenant of its subject (a list that begins
            // with one, ["", "acme"], too), which Auth:RequireTenantClaim is there to prevent. An empty list or a null is no
            // claim at all to the token handler: the subject became the tenant the same way.
            if (claims.Any(c => string.IsNullOrWhiteSpace(c.Value)) || (claims.Count == 0 && HasPayloadProperty(token, name)))
            {
                return $"its '{name}' claim is empty: it names no tenant";
            }

            // true, 4.2 or {"id": "acme"} taken as text would be a tenant of the token handler's wording, not the issuer's.
            return claims.FirstOrDefault(c => !IsText(c)) is { } odd
                ? $"its '{name}' claim is not a string (a {Kind(odd)}): it must name the tenant as text"
                : null;
        }

        /// <summary>A claim of text, or of a whole number (an issuer's numeric organization id reads the same either way).</summary>
        private static bool IsText(Claim claim) => claim.ValueType is ClaimValueTypes.String or ClaimValueTypes.Integer or ClaimValueTypes.Integer32
            or ClaimValueTypes.Integer64 or ClaimValueTypes.UInteger32 or ClaimValueTypes.UInteger64;

        private static string Kind(Claim claim) => claim.ValueType switch
        {
            ClaimValueTypes.Boolean => "boolean",
            ClaimValueTypes.Double => "number with a fraction",
            _ => "JSON object or list",
        };

        /// <summary>Whether the token's payload has a property <paramref name="name"/>, of any value.</summary>
        private static bool HasPayloadProperty(SecurityToken? token, string name)
        {
            if (token is not JsonWebToken jwt)
            {
                return false;
            }

            using var payload = JsonDocument.Parse(Base64UrlEncoder.DecodeBytes(jwt.EncodedPayload));
            return payload.RootElement.ValueKind == JsonValueKind.Object && payload.RootElement.TryGetProperty(name, out _);
        }

        private static async Task WriteProblemAsync(JwtBearerChallengeContext context)
        {
            context.HandleResponse();
            if (context.AuthenticateFailure is not null && await KeysUnavailableAsync(context))
            {
                // Without the authority's keys no token can be checked: a 401 would tell clients their token is bad.
                context.Response.Headers.RetryAfter = ProblemDetailsExceptionHandler.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
                await WriteAsync(context, StatusCodes.Status503ServiceUnavailable, "The service is temporarily unavailable.",
                    "The identity provider (Auth:Authority) cannot be reached for its signing keys, so no bearer token can be checked right now: retry shortly.");
                return;
            }

            var detail = context.AuthenticateFailure switch
            {
                SecurityTokenExpiredException expired => $"The bearer token expired at {expired.Expires:O}.",
                SecurityTokenInvalidSignatureException or SecurityTokenSignatureKeyNotFoundException => "The bearer token's signature is not valid.",
                SecurityTokenInvalidAudienceException => "The bearer token is not meant for this service (audience).",
                SecurityTokenInvalidIssuerException => "The bearer token comes from an issuer this service does not trust.",
                UnusableTenantException unusable => unusable.Message,
                not null => "The bearer token is not valid.",
                null => "A bearer token is required: send 'Authorization: Bearer <token>' (locally, ./build.sh token --sub <you> prints one).",
            };
            context.Response.Headers.WWWAuthenticate = context.AuthenticateFailure is null
                ? "Bearer"
                : "Bearer error=\"invalid_token\"";
            await WriteAsync(context, StatusCodes.Status401Unauthorized, "Authentication required.", detail);
        }

        /// <summary>
        /// Whether tokens are checked with an authority's published keys and those cannot be fetched (a node that started
        /// while the identity provider was down has none; one that fetched them keeps them through an outage).
        /// </summary>
        private static async Task<bool> KeysUnavailableAsync(JwtBearerChallengeContext context)
        {
            if (context.Options.ConfigurationManager is not { } keys)
            {
                return false;
            }

            try
            {
                await keys.GetConfigurationAsync(context.HttpContext.RequestAborted);
                return false;
            }
            catch (Exception e) when (!context.HttpContext.RequestAborted.IsCancellationRequested)
            {
                context.HttpContext.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(AuthenticationSetup))
                    .LogWarning("The identity provider's signing keys cannot be fetched from {Authority}: {Reason}", context.Options.Authority, e.Message);
                return true;
            }
        }

        private static Task WriteAsync(JwtBearerChallengeContext context, int status, string title, string detail)
        {
            context.Response.StatusCode = status;
            var problems = context.HttpContext.RequestServices.GetRequiredService<IProblemDetailsService>();
            return problems.WriteAsync(new ProblemDetailsContext
            {
                HttpContext = context.HttpContext,
                ProblemDetails = { Status = status, Title = title, Detail = detail },
            }).AsTask();
        }
    }
}

/// <summary>A valid token whose tenant (its <c>tenant</c> claim, else <c>sub</c>) cannot be used as a tenant id.</summary>
internal sealed class UnusableTenantException(string message) : SecurityTokenValidationException(message);
