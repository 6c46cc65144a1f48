using System.ClientModel;
using System.Collections.Concurrent;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Security;
using ModularChat.Providers.Contracts;
using OpenAI;
using OpenAI.Embeddings;

namespace ModularChat.Search.Embeddings;

/// <summary>The embedding model a tenant's entries and queries are embedded with.</summary>
/// <param name="Model">Identifies the vector space: vectors of different models are never compared.</param>
/// <param name="BuiltIn">The built-in embedder when that is the model (queries then get word-rarity weights).</param>
internal sealed record TenantEmbedder(IEmbeddingGenerator<string, Embedding<float>> Generator, string Model, HashedEmbedder? BuiltIn);

/// <summary>
/// Chooses each tenant's embedder: the tenant's own provider (Providers module) when it has one with an embedding
/// model, else the configured OpenAI-compatible endpoint, else the built-in offline embedder.
/// </summary>
internal sealed class TenantEmbedders : IDisposable
{
    private static readonly TimeSpan CacheFor = TimeSpan.FromSeconds(5);

    private readonly ITenantAiClients _clients;
    private readonly TimeProvider _clock;
    private readonly TenantEmbedder _default;
    private readonly ConcurrentDictionary<string, (long At, TenantEmbedder Embedder)> _cache = new(StringComparer.Ordinal);

    public TenantEmbedders(ITenantAiClients clients, HashedEmbedder builtIn, IOptions<SearchOptions> options, TimeProvider clock)
    {
        _clients = clients;
        _clock = clock;
        BuiltIn = new TenantEmbedder(new HashedEmbeddingGenerator(builtIn), builtIn.ModelId, builtIn);
        var embeddings = options.Value.Embeddings;
        _default = string.IsNullOrWhiteSpace(embeddings.Endpoint)
            ? BuiltIn
            : new TenantEmbedder(
                new FailureTranslatingEmbeddingGenerator(
                    new EmbeddingClient(embeddings.Model, new ApiKeyCredential(string.IsNullOrEmpty(embeddings.ApiKey) ? "none" : embeddings.ApiKey),
                        new OpenAIClientOptions { Endpoint = new Uri(embeddings.Endpoint) }).AsIEmbeddingGenerator(),
                    ModelFailures.Scrubbed(embeddings.ApiKey)),
                $"openai-compatible:{new Uri(embeddings.Endpoint).Authority}:{embeddings.Model}",
                null);
    }

    /// <summary>The built-in offline embedder.</summary>
    public TenantEmbedder BuiltIn { get; }

    /// <summary>The tenant's embedder now (its provider settings are looked up again after a few seconds).</summary>
    public async Task<TenantEmbedder> ForTenantAsync(string tenantId, CancellationToken cancellationToken)
    {
        var now = _clock.GetTimestamp();
        if (_cache.TryGetValue(tenantId, out var cached) && _clock.GetElapsedTime(cached.At, now) < CacheFor)
        {
            return cached.Embedder;
        }

        var provider = await _clients.GetEmbeddingGeneratorAsync(tenantId, cancellationToken);
        var embedder = provider is null
            ? _default
            : new TenantEmbedder(provider.Generator, $"provider:{provider.ProviderName}:{provider.Model}", null);
        if (_cache.Count > 10_000)
        {
            _cache.Clear();
        }

        _cache[tenantId] = (now, embedder);
        return embedder;
    }

    public void Dispose() => _default.Generator.Dispose();
}
