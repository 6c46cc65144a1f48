using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace ModularChat.Providers.Clients;

/// <summary>
/// The tenant's chat client as other modules get it (<see cref="TenantAiClients"/>, for summaries): a failed call
/// surfaces as a <see cref="ModelCallException"/>, whose message says what happened (a status, a timeout, a reply that
/// is not the protocol) and is scrubbed of the key and anything credential-shaped. The client's own exception would
/// carry the provider's error text as it came, and a careless provider echoes the key in it into the caller's logs
/// and failure records. The caller's own cancellation passes through unchanged.
/// </summary>
internal sealed class ExplainedFailuresChatClient(IChatClient inner, ResolvedProvider provider, string model) : DelegatingChatClient(inner)
{
    public override async Task<ChatResponse> GetResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        try
        {
            return await base.GetResponseAsync(messages, options, cancellationToken);
        }
        catch (Exception e) when (ModelCallException.From(e, provider, model, cancellationToken) is { } failure && !ReferenceEquals(failure, e))
        {
            throw failure;
        }
    }

    public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var updates = base.GetStreamingResponseAsync(messages, options, cancellationToken).GetAsyncEnumerator(cancellationToken);
        while (true)
        {
            try
            {
                if (!await updates.MoveNextAsync())
                {
                    yield break;
                }
            }
            catch (Exception e) when (ModelCallException.From(e, provider, model, cancellationToken) is { } failure && !ReferenceEquals(failure, e))
            {
                throw failure;
            }

            yield return updates.Current;
        }
    }
}

/// <summary>The tenant's embedding generator as other modules get it (search): failures as in <see cref="ExplainedFailuresChatClient"/>.</summary>
internal sealed class ExplainedFailuresEmbeddingGenerator(IEmbeddingGenerator<string, Embedding<float>> inner, ResolvedProvider provider, string model)
    : DelegatingEmbeddingGenerator<string, Embedding<float>>(inner)
{
    public override async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(
        IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        try
        {
            return await base.GenerateAsync(values, options, cancellationToken);
        }
        catch (Exception e) when (ModelCallException.From(e, provider, model, cancellationToken) is { } failure && !ReferenceEquals(failure, e))
        {
            throw failure;
        }
    }
}
