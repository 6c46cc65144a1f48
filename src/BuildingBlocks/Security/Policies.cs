namespace ModularChat.BuildingBlocks.Security;

/// <summary>Authorization policy names that modules put on their endpoints.</summary>
public static class Policies
{
    /// <summary>
    /// Callers with the configured admin role (Auth:AdminRole, default "admin"): a tenant's administrators, for what concerns
    /// their own tenant (its retention, its dead-lettered summary jobs).
    /// </summary>
    public const string Admin = "admin";

    /// <summary>
    /// Callers with the configured operator role (Auth:OperatorRole, default "operator"): the service's operators, for what
    /// concerns every tenant (the encryption key, the search read model, summary sweeps over any tenant).
    /// </summary>
    public const string Operator = "operator";

    /// <summary>
    /// Callers who may add, change, delete and test their tenant's provider and MCP server settings: those with the role
    /// Auth:SettingsRole names, or, when it names none (the default), every caller of the tenant.
    /// </summary>
    public const string TenantSettings = "tenant-settings";
}
