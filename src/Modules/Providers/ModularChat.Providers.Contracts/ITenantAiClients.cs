using Microsoft.Extensions.AI;

namespace ModularChat.Providers.Contracts;

/// <summary>What a model is used for: each purpose can have its own model in a provider's settings.</summary>
public enum AiPurpose
{
    /// <summary>Answering the user (the provider's chatModel).</summary>
    Chat,

    /// <summary>Summarizing conversations (the provider's summaryModel, else its chatModel).</summary>
    Summary,
}

/// <summary>A chat client bound to a tenant's provider and model.</summary>
public sealed record TenantChatClient(IChatClient Client, string ProviderName, string Model);

/// <summary>An embedding generator bound to a tenant's provider and model.</summary>
public sealed record TenantEmbeddingGenerator(IEmbeddingGenerator<string, Embedding<float>> Generator, string ProviderName, string Model);

/// <summary>
/// The LLM clients of a tenant, built from the provider settings the tenant stored (with its decrypted API key,
/// which never leaves the process). Modules that can work offline (summaries, search) fall back to their built-in
/// algorithms when a tenant has no provider.
/// </summary>
public interface ITenantAiClients
{
    /// <summary>
    /// The tenant's chat client for <paramref name="purpose"/>: the named provider, else the tenant's default provider;
    /// null when the tenant has none (or none with a model for that purpose).
    /// </summary>
    Task<TenantChatClient?> GetChatClientAsync(string tenantId, AiPurpose purpose, string? providerName = null, CancellationToken cancellationToken = default);

    /// <summary>The tenant's embedding generator (default provider's embeddingModel), or null when it has none.</summary>
    Task<TenantEmbeddingGenerator?> GetEmbeddingGeneratorAsync(string tenantId, CancellationToken cancellationToken = default);
}

/// <summary>The answer when no provider module is present: no tenant has a provider.</summary>
public sealed class NoTenantAiClients : ITenantAiClients
{
    public Task<TenantChatClient?> GetChatClientAsync(string tenantId, AiPurpose purpose, string? providerName = null, CancellationToken cancellationToken = default)
        => Task.FromResult<TenantChatClient?>(null);

    public Task<TenantEmbeddingGenerator?> GetEmbeddingGeneratorAsync(string tenantId, CancellationToken cancellationToken = default)
        => Task.FromResult<TenantEmbeddingGenerator?>(null);
}
