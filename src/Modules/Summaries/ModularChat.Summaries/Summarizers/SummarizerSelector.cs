using System.ClientModel;
using System.ClientModel.Primitives;
using System.Collections.Concurrent;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Security;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Providers.Contracts;
using ModularChat.Summaries.Domain;
using OpenAI;

namespace ModularChat.Summaries.Summarizers;

/// <summary>
/// Picks the summarizer for a tenant: its own LLM provider when it has one for summaries (and the settings allow it),
/// else the configured summarizer; <c>llm</c> without a tenant provider uses the global endpoint, and falls back to the
/// extractive summarizer (with a warning) when none is configured, so summaries never stop for want of a model.
/// </summary>
public sealed partial class SummarizerSelector(
    ITenantAiClients tenantClients,
    IOptions<SummariesOptions> options,
    ITokenCounter tokens,
    ILogger<SummarizerSelector> logger) : IDisposable
{
    private readonly ConcurrentDictionary<string, IChatClient> _globalClients = new(StringComparer.Ordinal);
    private readonly ExtractiveSummarizer _extractive = new(tokens, options.Value.ExtractiveParallelism);

    public async Task<IConversationSummarizer> ForAsync(string tenantId, SummarySettings settings, CancellationToken cancellationToken)
    {
        var llm = options.Value.Llm;
        if (settings.UseTenantProviders || settings.Summarizer == SummariesOptions.LlmSummarizer)
        {
            var tenant = await tenantClients.GetChatClientAsync(tenantId, AiPurpose.Summary, cancellationToken: cancellationToken);
            if (tenant is not null)
            {
                return new LlmSummarizer(tenant.Client, tenant.Model, llm.Timeout, llm.Temperature, tokens) { PromptVersion = settings.PromptVersion };
            }
        }

        if (settings.Summarizer != SummariesOptions.LlmSummarizer)
        {
            return _extractive;
        }

        if (string.IsNullOrWhiteSpace(llm.Endpoint))
        {
            LogNoEndpoint(logger, tenantId, settings.Variant);
            return _extractive;
        }

        var client = _globalClients.GetOrAdd(settings.Model, model => BuildGlobalClient(llm, model));
        return new LlmSummarizer(client, settings.Model, llm.Timeout, llm.Temperature, tokens) { PromptVersion = settings.PromptVersion };
    }

    private static IChatClient BuildGlobalClient(LlmSummarizerOptions llm, string model)
    {
        var clientOptions = new OpenAIClientOptions
        {
            Endpoint = new Uri(llm.Endpoint!),
            NetworkTimeout = llm.Timeout,
            // Retries belong to the job queue (growing delays, then the dead-letter store), not to the HTTP client.
            RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
        };
        var key = string.IsNullOrEmpty(llm.ApiKey) ? "unused" : llm.ApiKey;
        var inner = new OpenAI.Chat.ChatClient(model, new ApiKeyCredential(key), clientOptions).AsIChatClient();
        return new ChatClientBuilder(new FailureTranslatingChatClient(inner, ModelFailures.Scrubbed(llm.ApiKey))).UseOpenTelemetry().Build();
    }

    public void Dispose()
    {
        foreach (var client in _globalClients.Values)
        {
            client.Dispose();
        }

        _extractive.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Summarizer 'llm' is configured for tenant {TenantId} (variant {Variant}) but neither the tenant nor Summaries:Llm:Endpoint provides a model: using the extractive summarizer")]
    private static partial void LogNoEndpoint(ILogger logger, string tenantId, string variant);
}
