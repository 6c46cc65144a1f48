using System.ClientModel;
using System.ClientModel.Primitives;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Options;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Network;
using OpenAI;

namespace ModularChat.Providers.Clients;

/// <summary>
/// Builds Microsoft.Extensions.AI clients for a tenant's provider over the OpenAI .NET client (chat completions),
/// through the SSRF-guarded HttpClient, with the configured timeout and retries, measured by <see cref="MeteredChatClient"/>;
/// an error event inside a streamed answer fails it (<see cref="StreamedErrorPolicy"/>).
/// </summary>
/// <remarks>
/// azure-openai goes through the same OpenAI client: Azure OpenAI's v1 API lives under <c>{endpoint}/openai/v1</c>,
/// speaks the same protocol (the model is the deployment name) and takes the key in an <c>api-key</c> header.
/// Azure.AI.OpenAI is not used: the served version (2.1.0) is built against an older OpenAI client than Microsoft.Extensions.AI.OpenAI needs.
/// </remarks>
internal sealed class ModelClients(OutboundNetwork network, IOptionsMonitor<ProvidersOptions> options, ProvidersMetrics metrics)
{
    // The OpenAI client insists on a credential; servers without keys (Ollama, vLLM) ignore it.
    private const string NoKey = "no-key";

    public IChatClient Chat(ResolvedProvider provider, string model, TimeSpan? timeout = null)
    {
        var inner = new OpenAI.Chat.ChatClient(model, Credential(provider), ClientOptions(provider, timeout)).AsIChatClient();
        return new MeteredChatClient(inner, Label(provider), model, metrics);
    }

    public IEmbeddingGenerator<string, Embedding<float>> Embeddings(ResolvedProvider provider, string model)
        => new OpenAI.Embeddings.EmbeddingClient(model, Credential(provider), ClientOptions(provider, null)).AsIEmbeddingGenerator();

    /// <summary>The provider as metrics name it: kind and host (tenants' own names stay out of metric labels).</summary>
    public static string Label(ResolvedProvider provider) => $"{provider.Kind}:{provider.Endpoint.Authority}";

    /// <summary>The API root the OpenAI client is pointed at.</summary>
    public static Uri ApiRoot(ResolvedProvider provider) => provider.Kind == ProviderKinds.AzureOpenAi
        ? new Uri(provider.Endpoint.GetLeftPart(UriPartial.Authority) + "/openai/v1/")
        : provider.Endpoint;

    private static ApiKeyCredential Credential(ResolvedProvider provider) => new(provider.ApiKey is { Length: > 0 } key ? key : NoKey);

    private OpenAIClientOptions ClientOptions(ResolvedProvider provider, TimeSpan? timeout)
    {
        var settings = options.CurrentValue;
        var clientOptions = new OpenAIClientOptions
        {
            Endpoint = ApiRoot(provider),
            Transport = new HttpClientPipelineTransport(network.Client),
            NetworkTimeout = timeout ?? settings.RequestTimeout,
            RetryPolicy = new NoRetryAfterTimeout(settings.MaxRetries),
            UserAgentApplicationId = "modularchat",
        };
        if (provider.Kind == ProviderKinds.AzureOpenAi)
        {
            clientOptions.AddPolicy(new AzureApiKeyHeader(), PipelinePosition.BeforeTransport);
        }

        // An error event in a streamed answer fails it, instead of ending it as if the model had finished.
        clientOptions.AddPolicy(new StreamedErrorPolicy(), PipelinePosition.BeforeTransport);

        return clientOptions;
    }

    /// <summary>
    /// The client's retries (429, 5xx, a connection that failed), except of a request that got no answer within
    /// Providers:RequestTimeout: its caller has already waited that long, a retry would make it twice as long (and the
    /// backoff on top) for a provider that is most likely still busy, and the caller would hear 504 only then.
    /// </summary>
    private sealed class NoRetryAfterTimeout(int maxRetries) : ClientRetryPolicy(maxRetries)
    {
        protected override bool ShouldRetry(PipelineMessage message, Exception? exception)
            => !TimedOut(exception, message.CancellationToken) && base.ShouldRetry(message, exception);

        /// <summary>A cancellation the caller did not ask for is the client's network timeout.</summary>
        private static bool TimedOut(Exception? exception, CancellationToken callerToken)
        {
            for (var e = exception; e is not null; e = e.InnerException)
            {
                if (e is TimeoutException || (e is OperationCanceledException && !callerToken.IsCancellationRequested))
                {
                    return true;
                }
            }

            return false;
        }
    }

    /// <summary>Azure OpenAI takes the key as <c>api-key</c>, not as a bearer token.</summary>
    private sealed class AzureApiKeyHeader : PipelinePolicy
    {
        public override void Process(PipelineMessage message, IReadOnlyList<PipelinePolicy> pipeline, int currentIndex)
        {
            Move(message);
            ProcessNext(message, pipeline, currentIndex);
        }

        public override ValueTask ProcessAsync(PipelineMessage message, IReadOnlyList<PipelinePolicy> pipeline, int currentIndex)
        {
            Move(message);
            return ProcessNextAsync(message, pipeline, currentIndex);
        }

        private static void Move(PipelineMessage message)
        {
            if (message.Request.Headers.TryGetValue("Authorization", out var authorization) && authorization is not null)
            {
                message.Request.Headers.Remove("Authorization");
                message.Request.Headers.Set("api-key", authorization.StartsWith("Bearer ", StringComparison.Ordinal) ? authorization[7..] : authorization);
            }
        }
    }
}
