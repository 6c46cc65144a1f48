using System.Buffers.Text;
using System.Security.Cryptography;
using Microsoft.AspNetCore.DataProtection;
using ModularChat.BuildingBlocks.Errors;

namespace ModularChat.Providers.Secrets;

/// <summary>
/// Encrypts and decrypts tenants' secrets (API keys, MCP headers and environment values) with Data Protection:
/// authenticated encryption under the key ring's current key, bound to the tenant (a ciphertext copied to another
/// tenant's row does not decrypt). A secret under a key that another node made after this one read its key ring (a key
/// rotation there) makes this node read the ring again (<see cref="RefreshableKeyManager"/>).
/// </summary>
internal sealed class SecretBox(IDataProtectionProvider provider, RefreshableKeyManager keys, TimeProvider clock)
{
    private const string Purpose = "ModularChat.Providers.Secrets.v1";

    // Data Protection payloads start with a 4-byte magic header, then the 16-byte id of the key that protected them.
    private const int KeyIdOffset = 4;

    /// <summary>How long a decryption waits for the key ring read again in the background.</summary>
    private static readonly TimeSpan RingReloadWait = TimeSpan.FromSeconds(3);

    /// <summary>At most one key-ring reload in this time: a key that is there and still fails (another master key) fails fast.</summary>
    private static readonly TimeSpan RingReloadInterval = TimeSpan.FromSeconds(30);

    private long _lastReload = long.MinValue;

    public string Protect(string tenantId, string plaintext) => Protector(tenantId).Protect(plaintext);

    /// <summary>Decrypts a stored secret.</summary>
    /// <exception cref="ConflictException">It cannot be decrypted (the master key or key ring changed).</exception>
    public string Unprotect(string tenantId, string ciphertext, string what)
    {
        var protector = Protector(tenantId);
        try
        {
            return protector.Unprotect(ciphertext);
        }
        catch (CryptographicException) when (AfterKeyRingReload(protector, ciphertext) is { } secret)
        {
            return secret;
        }
        catch (CryptographicException)
        {
            throw new ConflictException(
                $"The stored {what} cannot be decrypted (the encryption keys changed since it was stored): set it again.");
        }
    }

    /// <summary>
    /// <paramref name="ciphertext"/> decrypted after reading the key ring again, when its key is one the repository holds
    /// (made by another node since this one read the ring); null when it is not, or when it still fails after a reload
    /// (another master key). At most one reload in <see cref="RingReloadInterval"/>; calls that fail while one runs wait
    /// for it too.
    /// </summary>
    private string? AfterKeyRingReload(IDataProtector protector, string ciphertext)
    {
        var last = Interlocked.Read(ref _lastReload);
        if (last == long.MinValue || clock.GetElapsedTime(last) >= RingReloadInterval)
        {
            if (KeyIdOf(ciphertext) is not { } keyId || !keys.GetAllKeys().Any(k => k.KeyId == keyId))
            {
                return null; // a key nobody has: nothing to read again
            }

            if (Interlocked.CompareExchange(ref _lastReload, clock.GetTimestamp(), last) == last)
            {
                keys.ExpireKeyRing();
            }
        }

        // Data Protection reads the ring again in the background and serves the old one meanwhile (about a database read).
        while (clock.GetElapsedTime(Interlocked.Read(ref _lastReload)) < RingReloadWait)
        {
            Thread.Sleep(20);
            try
            {
                return protector.Unprotect(ciphertext);
            }
            catch (CryptographicException)
            {
                // not read again yet, or the key does not decrypt here either
            }
        }

        return null;
    }

    /// <summary>
    /// The same secret encrypted again under the key ring's current key (key rotation), and its hint as made today (hints
    /// are made when a secret is stored: one stored under an older rule gets the current one).
    /// </summary>
    public (string Cipher, string Hint) Reprotect(string tenantId, string ciphertext)
    {
        var protector = Protector(tenantId);
        var secret = protector.Unprotect(ciphertext);
        return (protector.Protect(secret), Hint(secret));
    }

    /// <summary>The id of the data-protection key that encrypted <paramref name="ciphertext"/>.</summary>
    public static Guid? KeyIdOf(string ciphertext)
    {
        try
        {
            var bytes = Base64Url.DecodeFromChars(ciphertext);
            return bytes.Length >= KeyIdOffset + 16 ? new Guid(bytes.AsSpan(KeyIdOffset, 16)) : null;
        }
        catch (FormatException)
        {
            return null;
        }
    }

    /// <summary>
    /// A hint that identifies a secret to its owner without revealing it: <c>sk-...abcd</c>. It shows at most about a fifth
    /// of the secret (a 16-character token showing 7 would leave too little to guess).
    /// </summary>
    public static string Hint(string secret)
    {
        var s = secret.Trim();
        return s.Length switch
        {
            >= 32 => $"{s[..3]}...{s[^4..]}",
            >= 20 => $"...{s[^4..]}",
            >= 10 => $"...{s[^2..]}",
            _ => "***",
        };
    }

    private IDataProtector Protector(string tenantId) => provider.CreateProtector(Purpose, tenantId);
}
