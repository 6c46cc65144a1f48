using System.Collections.Concurrent;
using Marten;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Caching;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Secrets;

namespace ModularChat.Providers.Clients;

/// <summary>
/// A tenant's provider as calls use it. Its key is held encrypted, as stored, and decrypted each time a call asks for it:
/// the plain key is never kept, in the cache or anywhere else, beyond the client built for one call.
/// </summary>
internal sealed class ResolvedProvider(ProviderSettings settings, SecretBox? secrets)
{
    private readonly string? _encryptedApiKey = settings.EncryptedApiKey;

    public Guid Id { get; } = settings.Id;

    public string TenantId { get; } = settings.TenantId;

    public string Name { get; } = settings.Name;

    /// <summary><see cref="Name"/> in the form names are compared in (made once, when the tenant's providers are read).</summary>
    public string ComparedName { get; } = ProviderSettings.Normalize(settings.Name);

    public string Kind { get; } = settings.Kind;

    public Uri Endpoint { get; } = new(settings.Endpoint);

    public string ChatModel { get; } = settings.ChatModel;

    public string? SummaryModel { get; } = settings.SummaryModel;

    public string? EmbeddingModel { get; } = settings.EmbeddingModel;

    public bool IsDefault { get; } = settings.IsDefault;

    /// <summary>The plain key (null when the provider has none).</summary>
    /// <exception cref="BuildingBlocks.Errors.ConflictException">The stored key cannot be decrypted.</exception>
    public string? ApiKey
    {
        get
        {
            if (_encryptedApiKey is null || secrets is null)
            {
                return null;
            }

            try
            {
                return secrets.Unprotect(TenantId, _encryptedApiKey, "API key");
            }
            catch (BuildingBlocks.Errors.ConflictException)
            {
                throw new BuildingBlocks.Errors.ConflictException(
                    $"The stored API key of provider '{Name}' cannot be decrypted (the encryption keys changed since it was stored): set it again with PUT /api/providers/{Id}.");
            }
        }
    }

    /// <summary>Never prints the key.</summary>
    public override string ToString() => $"{Name} ({Kind}, {Endpoint.Host})";
}

/// <summary>
/// Tenants' provider settings, cached in process memory for <see cref="ProvidersOptions.CacheDuration"/> (never in
/// Redis) with their keys encrypted as stored (<see cref="ResolvedProvider.ApiKey"/> decrypts on each use). Each entry
/// is kept with the tenant's providers' cache generation (<see cref="CacheGenerations"/>, shared by the nodes through
/// Redis), which a change bumps once it is committed: every node reads the settings again at its next use, as the node
/// that made the change does (a provider added through one node answered 404 on another, and a deleted one or a
/// replaced key was still used there, until its entry expired). Without Redis (not configured, down or not answering) the
/// generations are each node's own, other nodes see a change when their entry expires, and entries are kept only
/// <see cref="ProvidersOptions.LocalOnlyCacheDuration"/>. Expired entries are swept by a timer.
/// </summary>
internal sealed class ProviderDirectory : IDisposable
{
    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly IDocumentStore _store;
    private readonly SecretBox _secrets;
    private readonly CacheGenerations _generations;
    private readonly IOptionsMonitor<ProvidersOptions> _options;
    private readonly TimeProvider _clock;
    private readonly ITimer _sweeper;

    public ProviderDirectory(
        IDocumentStore store, SecretBox secrets, CacheGenerations generations, IOptionsMonitor<ProvidersOptions> options, TimeProvider clock)
    {
        _store = store;
        _secrets = secrets;
        _generations = generations;
        _options = options;
        _clock = clock;
        var period = TimeSpan.FromTicks(Math.Clamp(options.CurrentValue.CacheDuration.Ticks / 4, TimeSpan.FromMilliseconds(250).Ticks, TimeSpan.FromSeconds(15).Ticks));
        _sweeper = clock.CreateTimer(_ => Sweep(), null, period, period);
    }

    /// <summary>How many tenants' providers are in memory now.</summary>
    public int CachedTenants => _entries.Count;

    public async Task<IReadOnlyList<ResolvedProvider>> GetAllAsync(string tenantId, CancellationToken cancellationToken)
    {
        // Read before the settings: a change committed after this read bumps past it, so what is cached under it is not used again.
        var generation = await _generations.CurrentAsync(Scope(tenantId));
        var now = _clock.GetUtcNow();
        if (_entries.TryGetValue(tenantId, out var entry) && entry.ExpiresAt > now && entry.Generation == generation)
        {
            return entry.Providers;
        }

        IReadOnlyList<ProviderSettings> stored;
        await using (var session = _store.QuerySession(tenantId))
        {
            stored = await session.Query<ProviderSettings>().OrderBy(p => p.CreatedAt).ToListAsync(cancellationToken);
        }

        var providers = stored.Select(Resolve).ToList();
        var options = _options.CurrentValue;
        // Generations not shared (no Redis to share them through): other nodes' changes reach this node only by expiry.
        var duration = _generations.Shared || options.CacheDuration <= options.LocalOnlyCacheDuration ? options.CacheDuration : options.LocalOnlyCacheDuration;
        if (duration > TimeSpan.Zero && generation is not null)
        {
            _entries[tenantId] = new Entry(providers, now + duration, generation.Value);
        }
        else
        {
            // Not cached: with no generation, a change of this node's is not in Redis yet (the next read tries again).
            _entries.TryRemove(tenantId, out _);
        }

        return providers;
    }

    /// <summary>
    /// The named provider (by name, compared as <see cref="ProviderSettings.Normalize"/> makes it, or by id), else the
    /// tenant's default; null when the tenant has none.
    /// </summary>
    /// <exception cref="ConflictException">
    /// The name is that of two providers or more: stored before names were compared in their Unicode form (ADR 0010),
    /// they are the same name now, and which one is meant cannot be told.
    /// </exception>
    public async Task<ResolvedProvider?> FindAsync(string tenantId, string? nameOrId, CancellationToken cancellationToken)
    {
        var all = await GetAllAsync(tenantId, cancellationToken);
        if (string.IsNullOrWhiteSpace(nameOrId))
        {
            return all.FirstOrDefault(p => p.IsDefault) ?? (all.Count == 1 ? all[0] : null);
        }

        var key = nameOrId.Trim();
        var name = ProviderSettings.Normalize(key);
        var named = all.Where(p => p.ComparedName == name).ToList();
        return named.Count switch
        {
            1 => named[0],
            > 1 => throw new ConflictException(
                $"'{key}' is the name of {named.Count} providers of this tenant (stored before names were compared in their Unicode form, they are the same name now): " +
                $"rename or delete all but one (PUT /api/providers/{{id}}), or choose one by its id.",
                new Dictionary<string, object?> { ["providers"] = named.Select(p => p.Id).ToList() }),
            _ => Guid.TryParse(key, out var id) ? all.FirstOrDefault(p => p.Id == id) : null,
        };
    }

    /// <summary>
    /// After a change of the tenant's providers (committed or not: a failed save costs a read): bumps their generation, so
    /// that no node uses what it cached before, and drops this node's entry.
    /// </summary>
    public async Task ChangedAsync(string tenantId)
    {
        await _generations.BumpAsync(Scope(tenantId));
        _entries.TryRemove(tenantId, out _);
    }

    /// <summary>
    /// Drops this node's entries (after a key rotation: they hold the keys encrypted under the previous key, which still
    /// decrypt, so other nodes' entries need not go).
    /// </summary>
    public void Clear() => _entries.Clear();

    /// <summary>The cache scope of a tenant's providers.</summary>
    private static string Scope(string tenantId) => "providers:" + tenantId;

    private ResolvedProvider Resolve(ProviderSettings settings) => new(settings, _secrets);

    private void Sweep()
    {
        var now = _clock.GetUtcNow();
        foreach (var (tenant, entry) in _entries)
        {
            if (entry.ExpiresAt <= now)
            {
                _entries.TryRemove(new KeyValuePair<string, Entry>(tenant, entry));
            }
        }
    }

    public void Dispose() => _sweeper.Dispose();

    private sealed record Entry(IReadOnlyList<ResolvedProvider> Providers, DateTimeOffset ExpiresAt, long Generation);
}
