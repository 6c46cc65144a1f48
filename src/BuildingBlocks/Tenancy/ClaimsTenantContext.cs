using System.Security.Claims;
using Microsoft.AspNetCore.Http;

namespace ModularChat.BuildingBlocks.Tenancy;

/// <summary>Reads the tenant from the authenticated caller's claims.</summary>
public sealed class ClaimsTenantContext(IHttpContextAccessor accessor) : ITenantContext
{
    /// <summary>The claim that names the tenant explicitly.</summary>
    public const string TenantClaim = "tenant";

    /// <summary>The subject claim, used as the tenant when no tenant claim is present.</summary>
    public const string SubjectClaim = "sub";

    public string TenantId => FromPrincipal(accessor.HttpContext?.User)
        ?? throw new UnauthorizedAccessException("No authenticated tenant for this request.");

    public string? Subject => accessor.HttpContext?.User.FindFirstValue(SubjectClaim)
        ?? accessor.HttpContext?.User.FindFirstValue(ClaimTypes.NameIdentifier);

    /// <summary>The tenant of a principal: its <c>tenant</c> claim, else its <c>sub</c>.</summary>
    public static string? FromPrincipal(ClaimsPrincipal? user)
    {
        if (user?.Identity?.IsAuthenticated != true)
        {
            return null;
        }

        var tenant = user.FindFirstValue(TenantClaim);
        if (!string.IsNullOrWhiteSpace(tenant))
        {
            return tenant;
        }

        var sub = user.FindFirstValue(SubjectClaim) ?? user.FindFirstValue(ClaimTypes.NameIdentifier);
        return string.IsNullOrWhiteSpace(sub) ? null : sub;
    }
}
