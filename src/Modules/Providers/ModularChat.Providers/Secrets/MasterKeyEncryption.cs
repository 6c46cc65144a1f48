using System.Security.Cryptography;
using System.Xml.Linq;
using Microsoft.AspNetCore.DataProtection.XmlEncryption;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace ModularChat.Providers.Secrets;

/// <summary>
/// Encrypts each data-protection key with the master key (AES-256-GCM, authenticated) before it is stored.
/// The element records which master key encrypted it (a fingerprint, not the key), so a replaced master key listed
/// in <see cref="DataProtectionSettings.PreviousMasterKeys"/> can still read what it encrypted.
/// </summary>
internal sealed class MasterKeyXmlEncryptor(byte[] masterKey) : IXmlEncryptor
{
    public EncryptedXmlInfo Encrypt(XElement plaintextElement)
    {
        var plaintext = System.Text.Encoding.UTF8.GetBytes(plaintextElement.ToString(SaveOptions.DisableFormatting));
        var nonce = RandomNumberGenerator.GetBytes(AesGcm.NonceByteSizes.MaxSize);
        var tag = new byte[AesGcm.TagByteSizes.MaxSize];
        var ciphertext = new byte[plaintext.Length];
        using (var aes = new AesGcm(masterKey, tag.Length))
        {
            aes.Encrypt(nonce, plaintext, ciphertext, tag);
        }

        CryptographicOperations.ZeroMemory(plaintext);
        var element = new XElement("encryptedKey",
            new XComment(" This key is encrypted with the ModularChat master key (AES-256-GCM). "),
            new XAttribute("masterKey", MasterKeyFingerprint.Of(masterKey)),
            new XElement("nonce", Convert.ToBase64String(nonce)),
            new XElement("tag", Convert.ToBase64String(tag)),
            new XElement("value", Convert.ToBase64String(ciphertext)));
        return new EncryptedXmlInfo(element, typeof(MasterKeyXmlDecryptor));
    }
}

/// <summary>Decrypts what <see cref="MasterKeyXmlEncryptor"/> stored; Data Protection creates it by type with the service provider.</summary>
internal sealed class MasterKeyXmlDecryptor(IServiceProvider services) : IXmlDecryptor
{
    public XElement Decrypt(XElement encryptedElement)
    {
        var settings = services.GetRequiredService<IOptions<DataProtectionSettings>>().Value;
        var fingerprint = (string?)encryptedElement.Attribute("masterKey");
        var key = new[] { settings.MasterKeyBytes() }.Concat(settings.PreviousMasterKeyBytes())
            .OfType<byte[]>()
            .FirstOrDefault(k => MasterKeyFingerprint.Of(k) == fingerprint)
            ?? throw new CryptographicException(
                $"A stored data-protection key was encrypted with a master key ({fingerprint}) that is not configured: " +
                "set DataProtection:MasterKey, or list the old key in DataProtection:PreviousMasterKeys.");
        var nonce = Convert.FromBase64String((string)encryptedElement.Element("nonce")!);
        var tag = Convert.FromBase64String((string)encryptedElement.Element("tag")!);
        var ciphertext = Convert.FromBase64String((string)encryptedElement.Element("value")!);
        var plaintext = new byte[ciphertext.Length];
        using (var aes = new AesGcm(key, tag.Length))
        {
            aes.Decrypt(nonce, ciphertext, tag, plaintext);
        }

        try
        {
            return XElement.Parse(System.Text.Encoding.UTF8.GetString(plaintext));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plaintext);
        }
    }
}

internal static class MasterKeyFingerprint
{
    /// <summary>A short, non-reversible name of a master key: which one encrypted a stored key.</summary>
    public static string Of(byte[] key)
        => Convert.ToHexStringLower(SHA256.HashData([.. "modularchat-master-key:"u8, .. key])[..8]);
}
