using System.Globalization;
using System.Security.Claims;
using Microsoft.AspNetCore.Http;

namespace ModularChat.BuildingBlocks.Tenancy;

/// <summary>
/// The tenant of the current scope: the authenticated caller's (claims), unless background work
/// has set one explicitly for its scope with <see cref="Use"/>.
/// </summary>
public sealed class TenantContext(IHttpContextAccessor accessor)
{
    /// <summary>The claim that names the tenant explicitly.</summary>
    public const string TenantClaim = "tenant";

    /// <summary>The subject claim, used as the tenant when no tenant claim is present.</summary>
    public const string SubjectClaim = "sub";

    private string? _explicitTenant;

    /// <summary>The tenant id: set explicitly for this scope, else the caller's JWT <c>tenant</c> claim, else its <c>sub</c>.</summary>
    /// <exception cref="UnauthorizedAccessException">No tenant set and no authenticated caller.</exception>
    public string TenantId => _explicitTenant
        ?? FromPrincipal(accessor.HttpContext?.User)
        ?? throw new UnauthorizedAccessException("No authenticated tenant for this request.");

    /// <summary>The authenticated subject (<c>sub</c>), when there is one.</summary>
    public string? Subject => accessor.HttpContext?.User.FindFirstValue(SubjectClaim)
        ?? accessor.HttpContext?.User.FindFirstValue(ClaimTypes.NameIdentifier);

    /// <summary>Acts for <paramref name="tenantId"/> for the rest of this scope (background work, server-side writers).</summary>
    public void Use(string tenantId)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(tenantId);
        _explicitTenant = tenantId;
    }

    /// <summary>The longest tenant id accepted (it is part of every row's key and index entries).</summary>
    public const int MaxTenantIdLength = 256;

    /// <summary>
    /// Why <paramref name="tenantId"/> (a principal's, see <see cref="FromPrincipal"/>) cannot be used as a tenant id, or
    /// null when it can: there must be one, of at most <see cref="MaxTenantIdLength"/> characters, without control
    /// characters (PostgreSQL cannot store a NUL, and the others have no place in an identifier), invisible or layout
    /// characters (zero-width, bidirectional controls, line separators), nor white space at either end.
    /// </summary>
    /// <param name="tenantClaim">The claim the token's issuer names the tenant with, for the reason's wording.</param>
    public static string? Unusable(string? tenantId, string tenantClaim = TenantClaim) => tenantId switch
    {
        null => $"it names no tenant: it needs a '{tenantClaim}' or '{SubjectClaim}' claim",
        { Length: > MaxTenantIdLength } => $"its tenant ('{tenantClaim}', else '{SubjectClaim}') is longer than {MaxTenantIdLength} characters",
        _ when tenantId.Any(char.IsControl) => $"its tenant ('{tenantClaim}', else '{SubjectClaim}') holds control characters",
        // "acme" with a zero-width space or a right-to-left override would be another tenant that reads as "acme" (or as
        // something else) wherever its id is shown, and a line separator starts a line of the sender's making in a log.
        _ when tenantId.FirstOrDefault(Invisible) is var c && c != default
            => $"its tenant ('{tenantClaim}', else '{SubjectClaim}') holds an invisible or layout character (U+{(int)c:X4}): it would read as another tenant",
        // Taken as written, " acme" would be a tenant of its own, empty, beside "acme": a split nobody would notice.
        _ when char.IsWhiteSpace(tenantId[0]) || char.IsWhiteSpace(tenantId[^1])
            => $"its tenant ('{tenantClaim}', else '{SubjectClaim}') begins or ends with white space: it would be another tenant than '{tenantId.Trim()}'",
        _ => null,
    };

    /// <summary>A formatting character (zero-width, bidirectional control, soft hyphen, ...) or a line or paragraph separator.</summary>
    private static bool Invisible(char c) => CharUnicodeInfo.GetUnicodeCategory(c)
        is UnicodeCategory.Format or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator;

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
