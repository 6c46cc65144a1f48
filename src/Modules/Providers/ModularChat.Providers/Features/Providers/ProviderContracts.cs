using FluentValidation;
using JasperFx;
using Marten;
using Marten.Exceptions;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Network;
using Npgsql;

namespace ModularChat.Providers.Features.Providers;

/// <summary>Body of <c>POST /api/providers</c> and <c>PUT /api/providers/{id}</c>.</summary>
/// <param name="Name">Unique per tenant, compared after Unicode normalization with case folding (NFKC_Casefold); chat requests can name it.</param>
/// <param name="Kind"><c>openai-compatible</c> (OpenAI, Ollama, vLLM, LM Studio) or <c>azure-openai</c>.</param>
/// <param name="Endpoint">The API root, e.g. <c>https://api.openai.com/v1</c> or <c>http://localhost:11434/v1</c> (openai-compatible; defaults to OpenAI), or the resource URL <c>https://NAME.openai.azure.com</c> (azure-openai).</param>
/// <param name="ChatModel">The model that answers chat turns (azure-openai: the deployment name).</param>
/// <param name="SummaryModel">The model that writes summaries (default: the chat model).</param>
/// <param name="EmbeddingModel">The model that computes embeddings (none: search stays on its offline embedder).</param>
/// <param name="ApiKey">The key, stored encrypted and never returned. On PUT, leave it out to keep the stored key; send "" to remove it.</param>
/// <param name="IsDefault">The provider used when a request names none (the first provider is the default unless told otherwise).</param>
public sealed record ProviderRequest(
    string? Name,
    string? Kind,
    string? Endpoint,
    string? ChatModel,
    string? SummaryModel,
    string? EmbeddingModel,
    string? ApiKey,
    bool? IsDefault);

/// <summary>A provider as the API shows it: never the key, only whether there is one and a masked hint.</summary>
public sealed record ProviderResponse(
    Guid Id,
    string Name,
    string Kind,
    string Endpoint,
    string ChatModel,
    string? SummaryModel,
    string? EmbeddingModel,
    bool HasApiKey,
    string? ApiKeyHint,
    bool IsDefault,
    DateTimeOffset CreatedAt,
    DateTimeOffset UpdatedAt)
{
    internal static ProviderResponse From(ProviderSettings p) => new(
        p.Id, p.Name, p.Kind, p.Endpoint, p.ChatModel, p.SummaryModel, p.EmbeddingModel, p.EncryptedApiKey is not null, p.ApiKeyHint,
        p.IsDefault, p.CreatedAt, p.UpdatedAt);
}

/// <summary>The fields of a provider that create and update commands share.</summary>
internal interface IProviderFields
{
    string? Name { get; }

    string? Kind { get; }

    string? Endpoint { get; }

    string? ChatModel { get; }

    string? SummaryModel { get; }

    string? EmbeddingModel { get; }

    string? ApiKey { get; }

    bool? IsDefault { get; }
}

/// <summary>Validation of a provider's fields (create and update share it). Messages never quote the key.</summary>
internal abstract class ProviderFieldsValidator<T> : AbstractValidator<T>
    where T : IProviderFields
{
    protected ProviderFieldsValidator(IOptions<ProvidersOptions> options, OutboundNetwork network)
    {
        var o = options.Value;
        RuleFor(r => r.Name).Must(ProviderSettings.IsGiven).WithMessage("'name' is required (white space and invisible characters alone do not count).");
        RuleFor(r => r.Name).Must(n => ProviderSettings.FitsLength(n, o.MaxNameLength))
            .WithMessage($"'name' may be at most {o.MaxNameLength} characters, also in the form names are compared in (some characters stand for several).").AsLimit();
        RuleFor(r => r.Name).Must(ProviderSettings.HasNoControlCharacters).WithMessage("'name' must not contain control characters (line breaks, tabs, ...).");
        RuleFor(r => r.Kind).Must(k => !string.IsNullOrWhiteSpace(k)).WithMessage($"'kind' is required: one of {string.Join(", ", ProviderKinds.All)}.");
        RuleFor(r => r.Kind).Must(k => ProviderKinds.All.Contains(k)).When(r => !string.IsNullOrWhiteSpace(r.Kind))
            .WithMessage(r => $"'kind' must be one of {string.Join(", ", ProviderKinds.All)} (was '{r.Kind}').");
        RuleFor(r => r.Endpoint)
            .Custom((endpoint, context) =>
            {
                var request = context.InstanceToValidate;
                if (string.IsNullOrWhiteSpace(endpoint) && request.Kind != ProviderKinds.AzureOpenAi)
                {
                    return; // openai-compatible defaults to OpenAI's API
                }

                if (network.CheckNew(endpoint, "endpoint") is { } problem)
                {
                    context.AddFailure("endpoint", problem);
                }
            });
        RuleFor(r => r.ChatModel).Must(m => !string.IsNullOrWhiteSpace(m)).WithMessage("'chatModel' is required (azure-openai: the deployment name).");
        foreach (var (field, rule) in new[] { ("chatModel", RuleFor(r => r.ChatModel)), ("summaryModel", RuleFor(r => r.SummaryModel)), ("embeddingModel", RuleFor(r => r.EmbeddingModel)) })
        {
            rule.Must(m => m is null || m.Trim().Length <= o.MaxModelLength).WithMessage($"'{field}' may be at most {o.MaxModelLength} characters.").AsLimit();
            rule.Must(ProviderSettings.HasNoControlCharacters).WithMessage($"'{field}' must not contain control characters (line breaks, tabs, ...).");
        }

        RuleFor(r => r.ApiKey).Must(k => k is null || k.Length <= o.MaxApiKeyLength)
            .WithMessage($"'apiKey' may be at most {o.MaxApiKeyLength} characters.").AsLimit();
        RuleFor(r => r.ApiKey).Must(k => k is null || k.Length == 0 || (k.Trim() == k && !k.Any(char.IsControl)))
            .WithMessage("'apiKey' must not contain spaces at its ends or control characters.");
        // Sent in an HTTP header (Authorization, api-key), which carries ASCII only: any other key could never be used.
        RuleFor(r => r.ApiKey).Must(k => k is null || k.All(char.IsAscii))
            .WithMessage("'apiKey' must hold ASCII characters only: it is sent in an HTTP header, which carries nothing else.");
        RuleFor(r => r.ApiKey).Must(k => k != "").When(r => r.Kind == ProviderKinds.AzureOpenAi)
            .WithMessage("'apiKey' is required for azure-openai.");
    }
}

internal static class ProviderStore
{
    /// <summary>The endpoint to store: trimmed, OpenAI's API when an openai-compatible provider names none.</summary>
    public static string Endpoint(IProviderFields request)
        => string.IsNullOrWhiteSpace(request.Endpoint) ? ProviderKinds.OpenAiEndpoint : request.Endpoint.Trim().TrimEnd('/');

    public static string? Optional(string? value) => string.IsNullOrWhiteSpace(value) ? null : value.Trim();

    /// <summary>
    /// Whether two URLs reach the same server: scheme, host and port alike (the path may differ). A stored secret that
    /// a client leaves out of an update is kept only for the same server: it is never returned, and it must not be
    /// readable either by pointing its owner's settings at a server of one's own.
    /// </summary>
    public static bool SameServer(string? before, string? after)
        => Uri.TryCreate(before, UriKind.Absolute, out var b) && Uri.TryCreate(after, UriKind.Absolute, out var a)
           && string.Equals(b.GetLeftPart(UriPartial.Authority), a.GetLeftPart(UriPartial.Authority), StringComparison.OrdinalIgnoreCase);

    /// <summary>The origin of <paramref name="url"/> for a message (scheme, host and port), or the text as it is.</summary>
    public static string Origin(string? url)
        => Uri.TryCreate(url, UriKind.Absolute, out var u) ? u.GetLeftPart(UriPartial.Authority) : url ?? "";

    /// <summary>True when <paramref name="e"/> is PostgreSQL refusing a duplicate (the unique name index).</summary>
    public static bool IsUniqueViolation(Exception e)
    {
        for (Exception? inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is PostgresException { SqlState: PostgresErrorCodes.UniqueViolation })
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Saves <paramref name="session"/>'s versioned updates (providers, MCP servers) unless one of their documents was
    /// changed or deleted since it was read: then nothing is written and the answer is false, the other write kept.
    /// </summary>
    public static async Task<bool> TrySaveUnchangedAsync(IDocumentSession session, CancellationToken cancellationToken)
    {
        try
        {
            await session.SaveChangesAsync(cancellationToken);
            return true;
        }
        catch (Exception e) when (IsStale(e))
        {
            return false;
        }
    }

    /// <summary>Marten refusing the write of a versioned document read before another write changed or deleted it (wrapped in an AggregateException).</summary>
    public static bool IsStale(Exception e) => e switch
    {
        ConcurrencyException or NonExistentDocumentException => true,
        AggregateException aggregate => aggregate.InnerExceptions.Any(IsStale),
        _ => e.InnerException is { } inner && IsStale(inner),
    };

    /// <summary>What <see cref="LockTenantAsync"/> serialises: a tenant's providers, or its MCP servers.</summary>
    public const string ProvidersLock = "providers";

    /// <inheritdoc cref="ProvidersLock"/>
    public const string McpServersLock = "mcp-servers";

    /// <summary>
    /// Starts <paramref name="session"/>'s transaction and waits until no other write of the tenant's
    /// <paramref name="what"/> is in one (a PostgreSQL advisory lock, released when the transaction ends, on any node).
    /// Call it before reading what the write depends on. Providers made default at once each read the others and
    /// turned their flag off: all but one failed on the stale versions with a 409 asking for a version nobody sent;
    /// one at a time, each sees the one before, the last one applied is the default, and counts (the per-tenant
    /// maximum) hold.
    /// </summary>
    public static async Task LockTenantAsync(IDocumentSession session, string what, CancellationToken cancellationToken)
    {
        await session.BeginTransactionAsync(cancellationToken);
        await using var command = new NpgsqlCommand("select pg_advisory_xact_lock(@key)", session.Connection);
        command.Parameters.AddWithValue("key", TenantLockKey(what, session.TenantId));
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>The advisory lock key of one tenant's <paramref name="what"/> (a hash: two tenants sharing one only wait for each other).</summary>
    internal static long TenantLockKey(string what, string tenant)
        => BitConverter.ToInt64(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes($"modularchat:{what}:{tenant}")), 0);

    /// <summary>Makes <paramref name="chosen"/> the tenant's only default.</summary>
    public static void MakeDefault(IDocumentSession session, IEnumerable<ProviderSettings> all, ProviderSettings chosen)
    {
        foreach (var other in all.Where(p => p.Id != chosen.Id && p.IsDefault))
        {
            other.IsDefault = false;
            session.Store(other);
        }

        chosen.IsDefault = true;
    }
}
