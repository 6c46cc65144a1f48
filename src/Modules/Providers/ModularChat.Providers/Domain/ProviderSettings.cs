using JasperFx.Metadata;

namespace ModularChat.Providers.Domain;

/// <summary>The kinds of LLM provider a tenant can configure.</summary>
public static class ProviderKinds
{
    /// <summary>Any server that speaks OpenAI's chat-completions API: OpenAI, Ollama, vLLM, LM Studio, ...</summary>
    public const string OpenAiCompatible = "openai-compatible";

    /// <summary>Azure OpenAI (its v1 API under {endpoint}/openai/v1, key in the api-key header; models are deployment names).</summary>
    public const string AzureOpenAi = "azure-openai";

    public static readonly IReadOnlyList<string> All = [OpenAiCompatible, AzureOpenAi];

    /// <summary>OpenAI's API, the endpoint of an openai-compatible provider that names none.</summary>
    public const string OpenAiEndpoint = "https://api.openai.com/v1";
}

/// <summary>A tenant's LLM provider settings (one document per provider). The API key is stored encrypted only.</summary>
public sealed class ProviderSettings : IVersioned
{
    /// <summary>Marten's version of the stored document: a key rotation's write of an older copy fails instead of undoing a change.</summary>
    public Guid Version { get; set; }

    public Guid Id { get; set; }

    public string TenantId { get; set; } = "";

    public string Name { get; set; } = "";

    /// <summary>Lower-cased <see cref="Name"/>: names are unique per tenant regardless of case.</summary>
    public string NormalizedName { get; set; } = "";

    public string Kind { get; set; } = ProviderKinds.OpenAiCompatible;

    public string Endpoint { get; set; } = "";

    public string ChatModel { get; set; } = "";

    public string? SummaryModel { get; set; }

    public string? EmbeddingModel { get; set; }

    /// <summary>The API key, encrypted with Data Protection (never the plain key).</summary>
    public string? EncryptedApiKey { get; set; }

    /// <summary>A masked hint of the key (<c>sk-...abcd</c>) for the owner to recognize it.</summary>
    public string? ApiKeyHint { get; set; }

    public bool IsDefault { get; set; }

    public DateTimeOffset CreatedAt { get; set; }

    public DateTimeOffset UpdatedAt { get; set; }

    public static string Normalize(string name) => name.Trim().ToLowerInvariant();
}
