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
        return new TenantChatClient(new ExplainedFailuresChatClient(clients.Chat(provider, model), provider, model), provider.Name, model);
    }

    public async Task<TenantEmbeddingGenerator?> GetEmbeddingGeneratorAsync(string tenantId, CancellationToken cancellationToken = default)
    {
        var provider = await directory.FindAsync(tenantId, null, cancellationToken);
        return provider?.EmbeddingModel is { Length: > 0 } model
            ? new TenantEmbeddingGenerator(new ExplainedFailuresEmbeddingGenerator(clients.Embeddings(provider, model), provider, model), provider.Name, model)
            : null;
    }
}
