using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Authorization.Infrastructure;
using Microsoft.AspNetCore.Authorization.Policy;
using Microsoft.Extensions.Options;

namespace ModularChat.Host.Auth;

/// <summary>
/// A 403 says what is missing: the roles the endpoint's policy asks for, and the claim they are read from (the default
/// handler's 403 became a ProblemDetails with a title only, which left a caller guessing between admin and operator).
/// </summary>
internal sealed class ForbiddenProblems(IOptions<AuthOptions> auth, IProblemDetailsService problems) : IAuthorizationMiddlewareResultHandler
{
    private readonly AuthorizationMiddlewareResultHandler _default = new();

    public async Task HandleAsync(RequestDelegate next, HttpContext context, AuthorizationPolicy policy, PolicyAuthorizationResult authorizeResult)
    {
        if (!authorizeResult.Forbidden)
        {
            await _default.HandleAsync(next, context, policy, authorizeResult);
            return;
        }

        var roles = policy.Requirements.OfType<RolesAuthorizationRequirement>().SelectMany(r => r.AllowedRoles).Distinct().ToList();
        context.Response.StatusCode = StatusCodes.Status403Forbidden;
        await problems.WriteAsync(new ProblemDetailsContext
        {
            HttpContext = context,
            ProblemDetails =
            {
                Status = StatusCodes.Status403Forbidden,
                Title = "Forbidden.",
                Detail = roles.Count > 0
                    ? $"This endpoint needs the role '{string.Join("' or '", roles)}' in the bearer token's '{auth.Value.RoleClaim}' claim."
                    : "The bearer token does not allow this.",
            },
        });
    }
}
