namespace ModularChat.BuildingBlocks.Security;

/// <summary>Authorization policy names that modules put on their endpoints.</summary>
public static class Policies
{
    /// <summary>Callers with the configured admin role (Auth:AdminRole, default "admin").</summary>
    public const string Admin = "admin";
}
