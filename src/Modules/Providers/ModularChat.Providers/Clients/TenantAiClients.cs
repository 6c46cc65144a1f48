using ModularChat.BuildingBlocks.Security;
using ModularChat.Providers.Contracts;

namespace ModularChat.Providers.Clients;

/// <summary>The Providers module's side of <see cref="ITenantAiClients"/>: the tenant's stored providers, keys decrypted in memory only.</summary>
internal sealed class TenantAiClients(ProviderDirectory directory, ModelClients clients) : ITenantAiClients
{
    public async Task<TenantChatClient?> GetChatClientAsync(string tenantId, AiPurpose purpose, string? providerName = null, CancellationToken cancellationToken = default)
    {
        var provider = await directory.FindAsync(tenantId, providerName, cancellationToken);
        if (provider is null)
        {
            return null;
        }

        var model = purpose == AiPurpose.Summary && !string.IsNullOrWhiteSpace(provider.SummaryModel) ? provider.SummaryModel : provider.ChatModel;
        return new TenantChatClient(new FailureTranslatingChatClient(clients.Chat(provider, model), Explained(provider, model)), provider.Name, model);
    }

    public async Task<TenantEmbeddingGenerator?> GetEmbeddingGeneratorAsync(string tenantId, CancellationToken cancellationToken = default)
    {
        var provider = await directory.FindAsync(tenantId, null, cancellationToken);
        return provider?.EmbeddingModel is { Length: > 0 } model
            ? new TenantEmbeddingGenerator(new FailureTranslatingEmbeddingGenerator(clients.Embeddings(provider, model), Explained(provider, model)), provider.Name, model)
            : null;
    }

    /// <summary>
    /// The clients other modules get (summaries, search) fail with the <see cref="ModelCallException"/> chat turns use:
    /// what happened (a status, a timeout, a reply that is not the protocol), scrubbed of the key and anything
    /// credential-shaped. The client's own exception carries the provider's error text as it came, which a careless
    /// provider fills with the key, into the caller's logs and failure records. The caller's cancellation passes through.
    /// </summary>
    private static Func<Exception, CancellationToken, Exception?> Explained(ResolvedProvider provider, string model)
        => (e, cancellationToken) => ModelCallException.From(e, provider, model, cancellationToken) is { } failure && !ReferenceEquals(failure, e) ? failure : null;
}
