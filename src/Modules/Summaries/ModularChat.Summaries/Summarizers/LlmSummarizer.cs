using System.Globalization;
using System.Text;
using Microsoft.Extensions.AI;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.BuildingBlocks.Validation;

namespace ModularChat.Summaries.Summarizers;

/// <summary>
/// Summaries written by a chat model on an OpenAI-compatible endpoint (the tenant's provider or the global one), through
/// Microsoft.Extensions.AI. The length limit is in the prompt; a reply that still runs over is cut back to whole sentences.
/// </summary>
internal sealed class LlmSummarizer(IChatClient client, string model, TimeSpan timeout, float temperature, ITokenCounter tokens) : IConversationSummarizer
{
    public const string SummarizerName = "llm";

    /// <summary>A single message longer than this is shortened in the prompt (the rest of the chunk still fits the context).</summary>
    private const int MaxMessageChars = 8_000;

    public string Name => SummarizerName;

    public string Model => model;

    public string PromptVersion { get; init; } = "";

    public async Task<SummaryMergeResult> MergeAsync(SummaryMergeInput input, CancellationToken cancellationToken)
    {
        var maxTokens = input.Settings.MaxSummaryTokens;
        var instructions = input.Settings.SystemPrompt
            .Replace("{maxTokens}", maxTokens.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal)
            .Replace("{maxWords}", (maxTokens * 3 / 4).ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);
        List<ChatMessage> prompt = [new(ChatRole.System, instructions), new(ChatRole.User, Transcript(input))];
        var options = new ChatOptions
        {
            ModelId = model,
            Temperature = temperature,
            // Room beyond the limit so the model can finish its sentence; anything past the limit is trimmed below.
            MaxOutputTokens = (maxTokens * 3 / 2) + 32,
        };

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        ChatResponse response;
        try
        {
            response = await client.GetResponseAsync(prompt, options, deadline.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"The model '{model}' did not answer within {timeout}.");
        }

        var reply = StorableText.WithoutNul(response.Text).Trim();
        var text = Text.FitWholeSentences(reply, maxTokens, tokens, mayBeCutOff: response.FinishReason == ChatFinishReason.Length);
        if (text.Length == 0)
        {
            throw new InvalidOperationException($"The model '{model}' answered with no complete sentence (finish reason: {response.FinishReason?.Value ?? "none"}).");
        }

        var inputTokens = response.Usage?.InputTokenCount is { } used ? (int)used : tokens.Count(instructions) + tokens.Count(prompt[1].Text);
        var outputTokens = response.Usage?.OutputTokenCount is { } written ? (int)written : tokens.Count(reply);
        return new SummaryMergeResult(text, inputTokens, outputTokens);
    }

    private static string Transcript(SummaryMergeInput input)
    {
        var text = new StringBuilder();
        var repeated = input.Messages.Count > 0 && input.RepeatedThrough >= input.Messages[0].Sequence && !string.IsNullOrWhiteSpace(input.PreviousSummary);
        text.Append("Current summary");
        if (repeated)
        {
            text.Append(CultureInfo.InvariantCulture, $" (it already stands for every message up to {input.RepeatedThrough})");
        }

        text.Append(":\n")
            .Append(string.IsNullOrWhiteSpace(input.PreviousSummary) ? "(none yet)" : input.PreviousSummary.Trim())
            .Append("\n\nNext messages");
        if (input.Messages.Count > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $" ({input.Messages[0].Sequence} to {input.Messages[^1].Sequence})");
        }

        if (repeated)
        {
            // Retention deleted the messages before these: the summary is all that is left of them, and the kept ones it
            // covers too are read again for their details. Folded in as new, what they say would be in the summary twice.
            var last = Math.Min(input.RepeatedThrough, input.Messages[^1].Sequence);
            text.Append(CultureInfo.InvariantCulture,
                $". Messages {input.Messages[0].Sequence} to {last} are already in the current summary and are given again only for their details: rewrite the summary with them, without counting or repeating what they say twice");
        }

        text.Append(":\n");
        foreach (var m in input.Messages)
        {
            var content = m.Content.Length > MaxMessageChars ? StorableText.Prefix(m.Content, MaxMessageChars) + " [...]" : m.Content;
            text.Append('[').Append(m.CreatedAt.UtcDateTime.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture)).Append("] ")
                .Append(MessageSpeakers.Of(m)).Append(" (").Append(m.Role.ToString().ToLowerInvariant()).Append("): ")
                .Append(content.ReplaceLineEndings(" ")).Append('\n');
        }

        text.Append("\nWrite the updated summary now.");
        return text.ToString();
    }
}
