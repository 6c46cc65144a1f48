namespace ModularChat.BuildingBlocks.Security;

/// <summary>Which settings hold secrets, by their names, and how a setting's value may be shown without one.</summary>
public static class SecretSettings
{
    /// <summary>Name endings of secrets (compared without case): <c>ApiKey</c>, <c>MasterKey</c>, <c>AccessToken</c>, <c>ClientSecret</c>...</summary>
    private static readonly string[] SecretEndings = ["key", "keys", "token", "secret", "secrets", "password", "passwd", "pwd", "credential", "credentials"];

    /// <summary>Name endings that look like a secret's and are not: the names of metadata keys (<c>SpeakerMetadataKeys</c>).</summary>
    private static readonly string[] NotSecretEndings = ["metadatakey", "metadatakeys"];

    /// <summary>Name parts of secrets wherever they appear (<c>PasswordFile</c>, <c>SecretHeaders</c>, <c>ConnectionString</c>).</summary>
    private static readonly string[] SecretParts = ["password", "secret", "credential", "connectionstring"];

    /// <summary>
    /// Whether one part of a setting's path names a secret: it ends like one (<c>ApiKey</c>, <c>SigningKey</c>,
    /// <c>BearerToken</c>) or holds a secret's word anywhere (<c>Password</c>, <c>Secret</c>). Counts such as
    /// <c>MaxSummaryTokens</c> and <c>TokenThreshold</c> and names such as <c>RedisKeyPrefix</c> are settings, not secrets,
    /// and so are the names of metadata keys (<c>Search:SpeakerMetadataKeys</c>), which end like one.
    /// </summary>
    public static bool IsSecretName(string name)
    {
        var lower = name.ToLowerInvariant();
        return SecretParts.Any(p => lower.Contains(p, StringComparison.Ordinal))
            || (SecretEndings.Any(e => lower.EndsWith(e, StringComparison.Ordinal)) && !NotSecretEndings.Any(e => lower.EndsWith(e, StringComparison.Ordinal)));
    }

    /// <summary>
    /// Whether any part of a setting's path (<c>DataProtection:PreviousMasterKeys:0</c>, or as a validator names it,
    /// <c>Embeddings.ApiKey</c>, <c>PreviousMasterKeys[0]</c>) names a secret.
    /// </summary>
    public static bool IsSecretPath(string path)
        => path.Split([':', '.'], StringSplitOptions.RemoveEmptyEntries)
            .Select(part => part.IndexOf('[', StringComparison.Ordinal) is var bracket and >= 0 ? part[..bracket] : part)
            .Any(IsSecretName);

    /// <summary>An http(s) URL without its user information and query, where a password or key may be passed; any other value as it is.</summary>
    public static string Scrubbed(string value)
        => Uri.TryCreate(value, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
            ? new UriBuilder(uri) { UserName = "", Password = "", Query = "", Fragment = "" }.Uri.ToString()
            : value;
}
