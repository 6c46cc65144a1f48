using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.AspNetCore.Authorization;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;
using ModularChat.BuildingBlocks.Options;
using ModularChat.BuildingBlocks.Security;
using ModularChat.BuildingBlocks.Tenancy;

namespace ModularChat.Host.Auth;

internal static class AuthenticationSetup
{
    public static IServiceCollection AddModularChatAuthentication(this IServiceCollection services)
    {
        services.AddValidatedOptions<AuthOptions, AuthOptionsValidator>(AuthOptions.Section);
        services.AddSingleton<IConfigureOptions<JwtBearerOptions>, ConfigureJwtBearer>();
        services.AddSingleton<IConfigureOptions<AuthorizationOptions>, ConfigureAuthorization>();
        services.AddAuthentication(JwtBearerDefaults.AuthenticationScheme).AddJwtBearer();
        services.AddAuthorization();
        return services;
    }

    private sealed class ConfigureAuthorization(IOptions<AuthOptions> auth) : IConfigureOptions<AuthorizationOptions>
    {
        public void Configure(AuthorizationOptions options)
        {
            // Everything needs a valid token unless it says otherwise (health, API page).
            options.FallbackPolicy = new AuthorizationPolicyBuilder().RequireAuthenticatedUser().Build();
            options.AddPolicy(Policies.Admin, p => p.RequireAuthenticatedUser().RequireRole(auth.Value.AdminRole));
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
                options.Authority = settings.Authority;
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
                IssuerSigningKey = key is null ? null : new SymmetricSecurityKey(key),
                ValidateIssuerSigningKey = true,
                NameClaimType = "sub",
                RoleClaimType = "role",
            };
            options.Events = new JwtBearerEvents { OnChallenge = WriteProblemAsync, OnTokenValidated = RequireUsableTenant };
        }

        /// <summary>A token whose tenant cannot be used is refused here, before any request reads or writes with it.</summary>
        private static Task RequireUsableTenant(TokenValidatedContext context)
        {
            if (TenantContext.Unusable(TenantContext.FromPrincipal(context.Principal)) is { } reason)
            {
                context.Fail(new UnusableTenantException($"The bearer token is valid, but {reason}."));
            }

            return Task.CompletedTask;
        }

        private static async Task WriteProblemAsync(JwtBearerChallengeContext context)
        {
            context.HandleResponse();
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
            context.Response.StatusCode = StatusCodes.Status401Unauthorized;
            context.Response.Headers.WWWAuthenticate = context.AuthenticateFailure is null
                ? "Bearer"
                : "Bearer error=\"invalid_token\"";
            var problems = context.HttpContext.RequestServices.GetRequiredService<IProblemDetailsService>();
            await problems.WriteAsync(new ProblemDetailsContext
            {
                HttpContext = context.HttpContext,
                ProblemDetails = { Status = StatusCodes.Status401Unauthorized, Title = "Authentication required.", Detail = detail },
            });
        }
    }
}

/// <summary>A valid token whose tenant (its <c>tenant</c> claim, else <c>sub</c>) cannot be used as a tenant id.</summary>
internal sealed class UnusableTenantException(string message) : SecurityTokenValidationException(message);
