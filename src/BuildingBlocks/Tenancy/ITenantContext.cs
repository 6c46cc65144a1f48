namespace ModularChat.BuildingBlocks.Tenancy;

/// <summary>The tenant the current request or message acts for.</summary>
public interface ITenantContext
{
    /// <summary>The tenant id: the caller's JWT <c>tenant</c> claim, else its <c>sub</c>.</summary>
    /// <exception cref="UnauthorizedAccessException">No authenticated caller.</exception>
    string TenantId { get; }

    /// <summary>The authenticated subject (<c>sub</c>), when there is one.</summary>
    string? Subject { get; }
}
