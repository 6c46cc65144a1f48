using Microsoft.Extensions.AI;
using ModularChat.BuildingBlocks.Security;

namespace ModularChat.Summaries.Summarizers;

/// <summary>The global summary model failed; the message is the client's, scrubbed of the key and anything credential-shaped.</summary>
internal sealed class SummaryModelException(string message) : Exception(message);

/// <summary>
/// The global summary model's client (<c>Summaries:Llm</c>): a failure's text comes from the model server, and a careless
/// one echoes the key it was sent ("Incorrect API key provided: ..."). It is rethrown scrubbed, so that neither the job's
/// log nor its dead-letter record holds the key. Cancellations (the job's, or its timeout) pass through unchanged.
/// </summary>
internal sealed class ScrubbedFailuresChatClient(IChatClient inner, string? apiKey) : DelegatingChatClient(inner)
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
            throw new SummaryModelException(Redaction.Scrub(e.Message, [apiKey]));
        }
    }
}
