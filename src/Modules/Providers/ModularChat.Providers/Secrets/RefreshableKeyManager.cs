using Microsoft.AspNetCore.DataProtection.KeyManagement;

namespace ModularChat.Providers.Secrets;

/// <summary>
/// Data Protection's key manager, whose cached key ring can be given up on demand (<see cref="ExpireKeyRing"/>).
/// </summary>
/// <remarks>
/// Data Protection reads the key ring once and keeps it for up to 24 hours; a key made by another node (a rotation there,
/// or by the <c>rotate-keys</c> command) is looked up again only in a node's first two minutes. After a rotation elsewhere,
/// every node running longer could not decrypt any secret re-encrypted under the new key (409 for every tenant's chat,
/// failing summary jobs) until it restarted. The key ring's cache ends when the token of
/// <see cref="GetCacheExpirationToken"/> is cancelled: this one is also cancelled by <see cref="ExpireKeyRing"/>, which
/// <see cref="SecretBox"/> calls when a ciphertext names a key that the repository holds and the ring in memory does not.
/// </remarks>
internal sealed class RefreshableKeyManager(IKeyManager inner) : IKeyManager
{
    private CancellationTokenSource _expiry = new();

    /// <summary>Makes Data Protection read the key ring again (in the background: calls meanwhile still use the old one).</summary>
    public void ExpireKeyRing()
    {
        var expired = Interlocked.Exchange(ref _expiry, new CancellationTokenSource());
        expired.Cancel(); // not disposed: the linked sources of rings made before may still listen to it
    }

    public CancellationToken GetCacheExpirationToken()
        // One linked source per key ring read (at most one a day, or per rotation): its registrations end with the tokens.
        => CancellationTokenSource.CreateLinkedTokenSource(inner.GetCacheExpirationToken(), Volatile.Read(ref _expiry).Token).Token;

    public IKey CreateNewKey(DateTimeOffset activationDate, DateTimeOffset expirationDate) => inner.CreateNewKey(activationDate, expirationDate);

    public IReadOnlyCollection<IKey> GetAllKeys() => inner.GetAllKeys();

    public void RevokeAllKeys(DateTimeOffset revocationDate, string? reason = null) => inner.RevokeAllKeys(revocationDate, reason);

    public void RevokeKey(Guid keyId, string? reason = null) => inner.RevokeKey(keyId, reason);
}
