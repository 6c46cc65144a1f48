using JasperFx.Metadata;

namespace ModularChat.Providers.Domain;

/// <summary>The transports an MCP server can be reached over.</summary>
public static class McpTransports
{
    public const string Stdio = "stdio";
    public const string Sse = "sse";
    public const string StreamableHttp = "streamable-http";

    public static readonly IReadOnlyList<string> All = [Stdio, Sse, StreamableHttp];
}

/// <summary>A secret value as stored: encrypted, with a masked hint.</summary>
public sealed class StoredSecret
{
    public string Cipher { get; set; } = "";

    public string Hint { get; set; } = "";
}

/// <summary>A tool an MCP server offers, as its last successful listing reported it.</summary>
public sealed class McpToolInfo
{
    public string Name { get; set; } = "";

    public string? Description { get; set; }

    /// <summary>The tool's JSON schema for its input, as JSON text.</summary>
    public string InputSchema { get; set; } = "{}";
}

/// <summary>A tenant's connection to an MCP tool server (one document per server).</summary>
public sealed class McpServerConnection : IVersioned
{
    /// <summary>
    /// Marten's version of the stored document: a write of a copy read before another write (a test or a chat turn
    /// storing the tools it listed, a key rotation) fails instead of overwriting that write or bringing back a deleted
    /// server.
    /// </summary>
    public Guid Version { get; set; }

    public Guid Id { get; set; }

    public string TenantId { get; set; } = "";

    public string Name { get; set; } = "";

    /// <summary><see cref="Name"/> as <see cref="ProviderSettings.Normalize"/> makes it, for the unique index (see <see cref="ProviderSettings.NormalizedName"/>).</summary>
    public string NormalizedName { get; set; } = "";

    public string Transport { get; set; } = McpTransports.StreamableHttp;

    /// <summary>stdio: the program to run (must be on the service's allowlist).</summary>
    public string? Command { get; set; }

    public List<string> Arguments { get; set; } = [];

    /// <summary>stdio: environment variables that are not secret.</summary>
    public Dictionary<string, string> Environment { get; set; } = [];

    /// <summary>stdio: environment variables whose values are secret (encrypted).</summary>
    public Dictionary<string, StoredSecret> SecretEnvironment { get; set; } = [];

    /// <summary>sse / streamable-http: the server's URL.</summary>
    public string? Url { get; set; }

    /// <summary>HTTP headers that are not secret.</summary>
    public Dictionary<string, string> Headers { get; set; } = [];

    /// <summary>HTTP headers whose values are secret (encrypted), e.g. Authorization.</summary>
    public Dictionary<string, StoredSecret> SecretHeaders { get; set; } = [];

    /// <summary>The tools of the last successful listing (refreshed by a test), null before the first.</summary>
    public List<McpToolInfo>? Tools { get; set; }

    public DateTimeOffset? ToolsRefreshedAt { get; set; }

    /// <summary>
    /// When a chat turn last failed to list this server (it was never listed): turns leave it out until
    /// <c>Mcp:UnreachableRetryAfter</c> has passed, instead of waiting for it every time. A test or a changed connection clears it.
    /// </summary>
    public DateTimeOffset? ListingFailedAt { get; set; }

    public string? ProtocolVersion { get; set; }

    public string? ServerName { get; set; }

    public string? ServerVersion { get; set; }

    public DateTimeOffset CreatedAt { get; set; }

    public IEnumerable<StoredSecret> AllSecrets() => SecretHeaders.Values.Concat(SecretEnvironment.Values);
}
