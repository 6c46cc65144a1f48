using JasperFx.CommandLine;
using Marten;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Security;
using ModularChat.Providers.Clients;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Features.Providers;
using ModularChat.Providers.Secrets;

namespace ModularChat.Providers.Features.Secrets;

/// <summary>What a key rotation did.</summary>
/// <param name="KeyId">The new data-protection key every secret is now encrypted under.</param>
/// <param name="Secrets">Secrets re-encrypted (API keys, MCP secret headers and environment values).</param>
/// <param name="Unreadable">Secrets that could not be decrypted and were left as they were (their owners must set them again).</param>
public sealed record SecretRotationResult(Guid KeyId, int Providers, int McpServers, int Secrets, int Unreadable);

/// <summary>
/// Key rotation: creates a new data-protection key, effective at once, and re-encrypts every stored secret of every
/// tenant under it. Older keys stay in the ring (so anything not yet rewritten still decrypts) until they expire.
/// One rotation at a time over every node (a PostgreSQL advisory lock, held from before the key is created until the
/// last secret is rewritten): two rotations at once each created a key, only the later one became the default, and
/// the other waited for its own key in vain and failed, leaving an orphan key in the ring.
/// </summary>
internal sealed partial class SecretRotation(
    IDocumentStore store, IKeyManager keys, SecretBox secrets, ProviderDirectory directory, IOptions<DataProtectionSettings> settings,
    TimeProvider clock, ILogger<SecretRotation> logger)
{
    /// <summary>
    /// Data Protection refreshes its cached key ring in the background: right after a key is created, protecting may still
    /// use the previous default key for a moment. Re-encrypting then would leave secrets under the old key.
    /// </summary>
    private async Task UntilProtectingUsesAsync(Guid keyId, CancellationToken cancellationToken)
    {
        var deadline = clock.GetUtcNow() + TimeSpan.FromSeconds(30);
        while (SecretBox.KeyIdOf(secrets.Protect("key-rotation-probe", "probe")) != keyId)
        {
            if (clock.GetUtcNow() > deadline)
            {
                throw new InvalidOperationException($"The new data-protection key {keyId} did not become the default key within 30 s; nothing was re-encrypted.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50), clock, cancellationToken);
        }
    }

    /// <summary>The advisory lock key of key rotations ("KEYROTAT").</summary>
    internal const long LockKey = 0x4B4559524F544154;

    /// <summary>Rotates the key, unless another rotation is running.</summary>
    /// <exception cref="ConflictException">
    /// Another rotation is running (on any node): this one did nothing. Refused rather than queued, because the running
    /// one already gives what was asked (a new key with every secret under it) and an operator's repeated request
    /// should not wait for it and then add yet another key.
    /// </exception>
    public async Task<SecretRotationResult> RotateAsync(CancellationToken cancellationToken)
    {
        await using var held = await ClusterLock.TryAcquireAsync(store, LockKey, cancellationToken);
        if (held is null)
        {
            LogBusy(logger);
            throw new ConflictException(
                "A key rotation is already in progress (on this node or another): this request created no key and re-encrypted nothing. " +
                "The running rotation gives every secret a new key; to rotate again, send the request once it has finished.",
                new Dictionary<string, object?> { ["rotationInProgress"] = true });
        }

        return await RotateLockedAsync(cancellationToken);
    }

    private async Task<SecretRotationResult> RotateLockedAsync(CancellationToken cancellationToken)
    {
        EnsureKeyRingReadable();
        var now = clock.GetUtcNow();
        var key = keys.CreateNewKey(now, now + settings.Value.KeyLifetime);
        await UntilProtectingUsesAsync(key.KeyId, cancellationToken);
        List<ProviderSettings> providers;
        List<McpServerConnection> servers;
        await using (var query = store.QuerySession())
        {
            providers = [.. await query.Query<ProviderSettings>().Where(p => p.AnyTenant()).ToListAsync(cancellationToken)];
            servers = [.. await query.Query<McpServerConnection>().Where(s => s.AnyTenant()).ToListAsync(cancellationToken)];
        }

        var rewritten = 0;
        var unreadable = 0;
        foreach (var tenant in providers.Select(p => p.TenantId).Concat(servers.Select(s => s.TenantId)).Distinct())
        {
            var (tenantProviders, tenantServers) = (providers.Where(p => p.TenantId == tenant).ToList(), servers.Where(s => s.TenantId == tenant).ToList());
            for (var attempt = 1; ; attempt++)
            {
                var counts = await RewrapTenantAsync(tenant, tenantProviders, tenantServers, cancellationToken);
                if (counts is { } done)
                {
                    (rewritten, unreadable) = (rewritten + done.Rewritten, unreadable + done.Unreadable);
                    break;
                }

                if (attempt == MaxAttemptsPerTenant)
                {
                    throw new ConflictException($"The secrets of tenant '{tenant}' kept changing while they were re-encrypted ({attempt} attempts); run the rotation again.");
                }

                // A provider or MCP server of the tenant was changed or deleted since it was read: read them again.
                await using var query = store.QuerySession(tenant);
                tenantProviders = [.. await query.Query<ProviderSettings>().ToListAsync(cancellationToken)];
                tenantServers = [.. await query.Query<McpServerConnection>().ToListAsync(cancellationToken)];
            }
        }

        directory.Clear();
        LogRotated(logger, key.KeyId, rewritten, unreadable);
        return new SecretRotationResult(key.KeyId, providers.Count, servers.Count, rewritten, unreadable);
    }

    private const int MaxAttemptsPerTenant = 5;

    /// <summary>
    /// Refuses the rotation when the key ring holds keys and none of them can be read here (<see cref="KeyRingCheck"/>): the
    /// key it made would be encrypted with the wrong master key, and it would re-encrypt nothing.
    /// </summary>
    private void EnsureKeyRingReadable()
    {
        if (KeyRingCheck.Unreadable(keys) is { } why)
        {
            throw new ConflictException(why + " No key was created and nothing was re-encrypted; run the rotation with the service's master key.");
        }
    }

    /// <summary>
    /// Re-encrypts one tenant's secrets in one transaction, each document over the version it was read at; null when one
    /// of them was changed or deleted meanwhile (nothing is written then: the caller reads them again).
    /// </summary>
    private async Task<(int Rewritten, int Unreadable)?> RewrapTenantAsync(
        string tenant, List<ProviderSettings> providers, List<McpServerConnection> servers, CancellationToken cancellationToken)
    {
        var rewritten = 0;
        var unreadable = 0;
        (string Cipher, string Hint)? Rewrap(string cipher)
        {
            try
            {
                var again = secrets.Reprotect(tenant, cipher);
                rewritten++;
                return again;
            }
            catch (System.Security.Cryptography.CryptographicException)
            {
                unreadable++;
                return null; // left as it is
            }
        }

        await using var session = store.LightweightSession(tenant);
        foreach (var provider in providers.Where(p => p.EncryptedApiKey is not null))
        {
            if (Rewrap(provider.EncryptedApiKey!) is { } again)
            {
                (provider.EncryptedApiKey, provider.ApiKeyHint) = again;
            }

            session.Update(provider);
        }

        foreach (var server in servers)
        {
            foreach (var secret in server.AllSecrets())
            {
                if (Rewrap(secret.Cipher) is { } again)
                {
                    (secret.Cipher, secret.Hint) = again;
                }
            }

            session.Update(server);
        }

        return await ProviderStore.TrySaveUnchangedAsync(session, cancellationToken) ? (rewritten, unreadable) : null;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Key rotation refused: another rotation is in progress")]
    private static partial void LogBusy(ILogger logger);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Secrets rotated: new data-protection key {KeyId}; {Rewritten} secrets re-encrypted, {Unreadable} unreadable")]
    private static partial void LogRotated(ILogger logger, Guid keyId, int rewritten, int unreadable);
}

internal static class RotateSecretsEndpoint
{
    public static void MapRotateSecrets(this IEndpointRouteBuilder app) =>
        app.MapPost("/api/admin/secrets/rotate", async Task<Ok<SecretRotationResult>> (SecretRotation rotation, CancellationToken ct)
                => TypedResults.Ok(await rotation.RotateAsync(ct)))
            .RequireAuthorization(Policies.Operator)
            .WithTags("Admin")
            .WithName("RotateSecrets")
            .WithSummary("Create a new encryption key and re-encrypt every stored secret under it (operator role)")
            .WithDescription("One rotation at a time over all nodes: a request made while another rotation runs answers 409 and changes nothing.")
            .ProducesProblem(StatusCodes.Status401Unauthorized)
            .ProducesProblem(StatusCodes.Status403Forbidden)
            .ProducesProblem(StatusCodes.Status409Conflict);
}

/// <summary><c>rotate-keys</c>: the same rotation from the command line, with the service's configuration.</summary>
[Description("Create a new data-protection key and re-encrypt every stored provider key and MCP secret under it", Name = "rotate-keys")]
public sealed class RotateKeysCommand : JasperFxAsyncCommand<NetCoreInput>
{
    public override async Task<bool> Execute(NetCoreInput input)
    {
        using var host = input.BuildHost();
        SecretRotationResult result;
        try
        {
            result = await host.Services.GetRequiredService<SecretRotation>().RotateAsync(CancellationToken.None);
        }
        catch (ConflictException busy)
        {
            await Console.Error.WriteLineAsync(busy.Message);
            return false;
        }

        Console.WriteLine($"new key {result.KeyId}: {result.Secrets} secrets re-encrypted ({result.Providers} providers, {result.McpServers} MCP servers), {result.Unreadable} unreadable");
        return result.Unreadable == 0;
    }
}
