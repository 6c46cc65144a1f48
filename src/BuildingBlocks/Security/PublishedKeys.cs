namespace ModularChat.BuildingBlocks.Security;

/// <summary>
/// Keys written in the repository for local use: the defaults of <c>docker-compose.yml</c>, there so that
/// <c>docker compose up</c> works without a word of set-up. Anyone can read them, so a node outside Development refuses
/// them: with the signing key anyone could sign a token for any tenant, with the operator role; with the master key,
/// anyone who reads the database could decrypt the stored API keys.
/// </summary>
public static class PublishedKeys
{
    /// <summary><c>Auth__SigningKey</c>'s default in docker-compose.yml.</summary>
    public const string ComposeSigningKey = "local-docker-signing-key-change-me-0123456789";

    /// <summary><c>DataProtection__MasterKey</c>'s default in docker-compose.yml.</summary>
    public const string ComposeMasterKey = "bG9jYWwtZG9ja2VyLW9ubHktbWFzdGVyLWtleS0zMmI=";

    /// <summary>Whether <paramref name="key"/> is one of the published keys (as written, or with white space around it).</summary>
    public static bool IsPublished(string? key) => key?.Trim() is ComposeSigningKey or ComposeMasterKey;

    /// <summary>Why a node of <paramref name="environmentName"/> refuses <paramref name="setting"/>'s published value (never the value itself).</summary>
    public static string Refusal(string setting, string environmentName)
        => $"Configuration '{setting}' is the key published in docker-compose.yml for local use, which anyone can read: it is refused outside " +
           $"Development (environment '{environmentName}'). Set it to a key of your own (head -c 32 /dev/urandom | base64).";
}
