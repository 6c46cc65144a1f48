using System.ClientModel;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace ModularChat.BuildingBlocks.Security;

/// <summary>A failed call to a model server, as the modules using it see it, with what the server answered.</summary>
public interface IModelCallFailure
{
    /// <summary>The model server's HTTP status, when it answered.</summary>
    int? ProviderStatus { get; }
}

/// <summary>A call to a model server configured for the whole service failed; the message is scrubbed of its key and anything credential-shaped.</summary>
public sealed class ModelServerException(string message, int? providerStatus = null) : Exception(message), IModelCallFailure
{
    public int? ProviderStatus { get; } = providerStatus;
}

/// <summary>
/// Turns what a model client throws into the exception its callers should see (<paramref name="translate"/>; null keeps
/// the original). A model server's error text comes as it was sent, and a careless server echoes the key it got
/// ("Incorrect API key provided: ..."): the translation is where it is scrubbed before any log or failure record.
/// </summary>
public sealed class FailureTranslatingChatClient(IChatClient inner, Func<Exception, CancellationToken, Exception?> translate) : DelegatingChatClient(inner)
{
    public override async Task<ChatResponse> GetResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        try
        {
            return await base.GetResponseAsync(messages, options, cancellationToken);
        }
        catch (Exception e) when (translate(e, cancellationToken) is { } translated)
        {
            throw translated;
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
            catch (Exception e) when (translate(e, cancellationToken) is { } translated)
            {
                throw translated;
            }

            yield return updates.Current;
        }
    }
}

/// <summary>An embedding generator whose failures are translated as in <see cref="FailureTranslatingChatClient"/>.</summary>
public sealed class FailureTranslatingEmbeddingGenerator(
    IEmbeddingGenerator<string, Embedding<float>> inner, Func<Exception, CancellationToken, Exception?> translate)
    : DelegatingEmbeddingGenerator<string, Embedding<float>>(inner)
{
    public override async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(
        IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        try
        {
            return await base.GenerateAsync(values, options, cancellationToken);
        }
        catch (Exception e) when (translate(e, cancellationToken) is { } translated)
        {
            throw translated;
        }
    }
}

/// <summary>Translations for <see cref="FailureTranslatingChatClient"/> and <see cref="FailureTranslatingEmbeddingGenerator"/>.</summary>
public static class ModelFailures
{
    /// <summary>
    /// For a model server configured for the whole service (<c>Summaries:Llm</c>, <c>Search:Embeddings</c>): any failure
    /// but a cancellation (the caller's, or its timeout) becomes a <see cref="ModelServerException"/> scrubbed of
    /// <paramref name="apiKey"/> and of the credentials it carries (<see cref="Redaction.WithCredentialParts(string)"/>).
    /// </summary>
    public static Func<Exception, CancellationToken, Exception?> Scrubbed(string? apiKey)
    {
        var secrets = Redaction.WithCredentialParts(apiKey);
        return (e, _) => e is OperationCanceledException
            ? null
            : new ModelServerException(Redaction.Scrub(e.Message, secrets), e is ClientResultException { Status: > 0 } result ? result.Status : null);
    }

    /// <summary>
    /// Whether the model server refused the request for what it was asked (HTTP 400, 413 or 422: an input longer than the
    /// model takes, a text it cannot read), as opposed to failing it (a 5xx, a rate limit, a timeout, no answer), which
    /// asking again later may cure. Only a refusal can be the fault of one input among several.
    /// </summary>
    public static bool RefusedTheInput(Exception failure) => failure is IModelCallFailure { ProviderStatus: 400 or 413 or 422 };
}
