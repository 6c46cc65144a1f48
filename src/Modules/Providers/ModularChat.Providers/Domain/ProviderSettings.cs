using ICU4N.Text;
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

    /// <summary>
    /// <see cref="Name"/> as <see cref="Normalize"/> makes it, for the unique index: names are unique per tenant regardless
    /// of case and Unicode form. Documents written before names were Unicode-normalized hold it trimmed and lower-cased
    /// only, so checks compare <see cref="Name"/> itself (<see cref="NameTaken"/>); each write stores the current form.
    /// </summary>
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

    /// <summary>
    /// The form provider and MCP server names are compared in: Unicode NFKC with case folding (NFKC_Casefold: a composed é
    /// and e with a combining accent alike, full-width letters and ligatures as their plain letters, any case, ß as ss,
    /// invisible characters such as the zero-width space and the soft hyphen removed), trimmed.
    /// </summary>
    /// <remarks>
    /// By ICU4N: the service runs with InvariantGlobalization, where <see cref="string.Normalize()"/> returns anything but
    /// ASCII unchanged (ADR 0010). ICU4N leaves a lone surrogate as it is instead of throwing. Applying it twice gives the
    /// same as once.
    /// </remarks>
    public static string Normalize(string name) => Normalizer2.NFKCCaseFoldInstance.Normalize(name).Trim();

    /// <summary>Whether <paramref name="name"/> has a character that counts: white space and invisible characters alone are no name.</summary>
    public static bool IsGiven(string? name) => !string.IsNullOrWhiteSpace(name) && Normalize(name).Length > 0;

    /// <summary>
    /// Whether <paramref name="name"/> is free of control characters (line breaks, tabs, escapes, C1 controls) and of
    /// Unicode's line and paragraph separators (U+2028, U+2029), as model names are: names are written into logs, where a
    /// line break would start a line of the sender's making. Names stored before this rule keep working; they are refused
    /// when written again.
    /// </summary>
    public static bool HasNoControlCharacters(string? name) => name is null || !name.Any(BreaksALine);

    /// <summary>A control character, or a character that some log viewers show as a line break (U+2028, U+2029).</summary>
    public static bool BreaksALine(char c) => char.IsControl(c) || c is '\u2028' or '\u2029';

    /// <summary>
    /// Whether <paramref name="name"/> is at most <paramref name="maxLength"/> characters, as sent (trimmed) and as
    /// compared: some characters stand for many (U+FDFA is 18 in NFKC), and the compared form is stored in a unique index
    /// whose rows PostgreSQL limits (~2.7 kB).
    /// </summary>
    public static bool FitsLength(string? name, int maxLength) => name is null || (name.Trim().Length <= maxLength && Normalize(name).Length <= maxLength);

    /// <summary>
    /// Whether <paramref name="name"/> is one of <paramref name="storedNames"/>, the names of stored documents. Compares the
    /// names themselves, not a stored <see cref="NormalizedName"/>, which may be of an older form.
    /// </summary>
    public static bool NameTaken(IEnumerable<string> storedNames, string name)
    {
        var compared = Normalize(name);
        return storedNames.Any(n => Normalize(n) == compared);
    }
}
