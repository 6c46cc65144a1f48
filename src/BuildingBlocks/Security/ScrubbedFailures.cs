using Microsoft.Extensions.AI;

namespace ModularChat.BuildingBlocks.Security;

/// <summary>A call to a model server configured for the whole service failed; the message is scrubbed of its key and anything credential-shaped.</summary>
public sealed class ModelServerException(string message) : Exception(message);

/// <summary>
/// A chat client on a model server configured for the whole service (<c>Summaries:Llm</c>): a failure's text comes from
/// the server, and a careless one echoes the key it was sent ("Incorrect API key provided: ..."). It is rethrown
/// scrubbed, so that no log or failure record holds the key. Cancellations (the caller's, or its timeout) pass through.
/// </summary>
public sealed class ScrubbedFailuresChatClient(IChatClient inner, string? apiKey) : DelegatingChatClient(inner)
{
    public override async Task<ChatResponse> GetResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        try
        {
            return await base.GetResponseAsync(messages, options, cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new ModelServerException(Redaction.Scrub(e.Message, [apiKey]));
        }
    }
}

/// <summary>An embedding generator on a model server configured for the whole service (<c>Search:Embeddings</c>): failures as in <see cref="ScrubbedFailuresChatClient"/>.</summary>
public sealed class ScrubbedFailuresEmbeddingGenerator(IEmbeddingGenerator<string, Embedding<float>> inner, string? apiKey)
    : DelegatingEmbeddingGenerator<string, Embedding<float>>(inner)
{
    public override async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(
        IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        try
        {
            return await base.GenerateAsync(values, options, cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new ModelServerException(Redaction.Scrub(e.Message, [apiKey]));
        }
    }
}
