using Microsoft.AspNetCore.DataProtection.KeyManagement;
using ModularChat.BuildingBlocks.Options;

namespace ModularChat.Providers.Secrets;

/// <summary>
/// Whether this configuration can read the key ring in the database: with another master key than the one its keys were
/// written with (nor one of the previous ones), none of them can be read. Data Protection would then make a key of its
/// own at the first secret it protects or decrypts, encrypted with that master key, which the nodes configured right
/// cannot read (they log errors about it at every key-ring read), while every stored secret answers 409 here.
/// </summary>
internal static class KeyRingCheck
{
    /// <summary>Why the key ring cannot be read with this configuration, or null when it can (or holds no key yet).</summary>
    public static string? Unreadable(IKeyManager keys)
    {
        var stored = keys.GetAllKeys();
        return stored.Count > 0 && !stored.Any(Readable)
            ? $"None of the {stored.Count} keys of the key ring in the database can be read with this configuration: its " +
              "DataProtection:MasterKey is not the one they were written with (nor one of DataProtection:PreviousMasterKeys)."
            : null;
    }

    private static bool Readable(IKey key)
    {
        try
        {
            return key.CreateEncryptor() is not null;
        }
        catch (Exception e) when (e is System.Security.Cryptography.CryptographicException or InvalidOperationException or FormatException)
        {
            return false;
        }
    }

    /// <summary>
    /// Stops a node's start when it cannot read the key ring, before it serves or writes anything under a key of its own
    /// (a check before anything starts, Data Protection's own start included: see <see cref="IStartCheck"/>).
    /// </summary>
    internal sealed class AtStart(IKeyManager keys) : IStartCheck
    {
        public Task CheckAsync(CancellationToken cancellationToken)
            => Unreadable(keys) is { } why
                ? throw new StartRefusedException(why + " Give the node the service's master key.")
                : Task.CompletedTask;
    }
}
