using System.Buffers.Text;
using System.Security.Cryptography;
using Microsoft.AspNetCore.DataProtection;
using ModularChat.BuildingBlocks.Errors;

namespace ModularChat.Providers.Secrets;

/// <summary>
/// Encrypts and decrypts tenants' secrets (API keys, MCP headers and environment values) with Data Protection:
/// authenticated encryption under the key ring's current key, bound to the tenant (a ciphertext copied to another
/// tenant's row does not decrypt).
/// </summary>
internal sealed class SecretBox(IDataProtectionProvider provider)
{
    private const string Purpose = "ModularChat.Providers.Secrets.v1";

    // Data Protection payloads start with a 4-byte magic header, then the 16-byte id of the key that protected them.
    private const int KeyIdOffset = 4;

    public string Protect(string tenantId, string plaintext) => Protector(tenantId).Protect(plaintext);

    /// <summary>Decrypts a stored secret.</summary>
    /// <exception cref="ConflictException">It cannot be decrypted (the master key or key ring changed).</exception>
    public string Unprotect(string tenantId, string ciphertext, string what)
    {
        try
        {
            return Protector(tenantId).Unprotect(ciphertext);
        }
        catch (CryptographicException)
        {
            throw new ConflictException(
                $"The stored {what} cannot be decrypted (the encryption keys changed since it was stored): set it again.");
        }
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
