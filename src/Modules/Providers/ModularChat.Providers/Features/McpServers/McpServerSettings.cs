using ModularChat.Providers.Domain;
using ModularChat.Providers.Secrets;

namespace ModularChat.Providers.Features.McpServers;

/// <summary>Maps a validated <see cref="McpServerRequest"/> onto a stored connection (create and replace alike).</summary>
internal static class McpServerSettings
{
    /// <summary>
    /// Sets name, transport and the transport's settings from <paramref name="body"/>, replacing what the connection held.
    /// Secret values of <paramref name="keptSecrets"/> (stored before, left out of the request) stay unless the request
    /// sends a value of the same name.
    /// </summary>
    public static void Apply(SecretBox secrets, string tenant, McpServerRequest body, McpServerConnection server,
        IReadOnlyDictionary<string, StoredSecret>? keptSecrets = null)
    {
        var name = body.Name!.Trim();
        var stdio = body.Transport == McpTransports.Stdio;
        server.Name = name;
        server.NormalizedName = ProviderSettings.Normalize(name);
        server.Transport = body.Transport!;
        server.Command = stdio ? body.Command!.Trim() : null;
        server.Arguments = stdio ? body.Arguments ?? [] : [];
        server.Url = stdio ? null : body.Url!.Trim();
        server.Environment = [];
        server.SecretEnvironment = [];
        server.Headers = [];
        server.SecretHeaders = [];
        var (plain, secret, plainOut, secretOut) = stdio
            ? (body.Environment, body.SecretEnvironment, server.Environment, server.SecretEnvironment)
            : (body.Headers, body.SecretHeaders, server.Headers, server.SecretHeaders);

        // Plain values stay plain unless their name looks secret; secret ones are encrypted.
        foreach (var (key, value) in plain ?? [])
        {
            if (McpServerRules.LooksSecret(key))
            {
                secretOut[key] = Protect(secrets, tenant, value);
            }
            else
            {
                plainOut[key] = value;
            }
        }

        foreach (var (key, value) in secret ?? [])
        {
            plainOut.Remove(key);
            secretOut[key] = Protect(secrets, tenant, value);
        }

        foreach (var (key, value) in keptSecrets ?? new Dictionary<string, StoredSecret>())
        {
            if (!plainOut.ContainsKey(key) && !secretOut.ContainsKey(key))
            {
                secretOut[key] = value;
            }
        }
    }

    private static StoredSecret Protect(SecretBox secrets, string tenant, string value)
        => new() { Cipher = secrets.Protect(tenant, value), Hint = SecretBox.Hint(value) };
}
