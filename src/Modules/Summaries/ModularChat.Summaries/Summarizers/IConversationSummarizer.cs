using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Summarizers;

/// <summary>One merge step: fold <see cref="Messages"/> (one chunk) into <see cref="PreviousSummary"/>.</summary>
/// <param name="PreviousSummary">The summary so far (null for the first chunk of a first summary or a rebuild).</param>
/// <param name="PreviouslyCoveredMessages">How many messages the previous summary stands for.</param>
/// <param name="Messages">The next messages, oldest first.</param>
/// <param name="RepeatedThrough">
/// The last sequence of <see cref="Messages"/> that <see cref="PreviousSummary"/> already stands for (0: none). Only when
/// retention deleted the messages before them: the previous summary is then the one text left of the deleted ones, and a
/// rebuild reads the kept messages it also covers again, for their details, which must not be counted twice.
/// </param>
public sealed record SummaryMergeInput(
    string? PreviousSummary,
    long PreviouslyCoveredMessages,
    IReadOnlyList<ConversationMessage> Messages,
    SummarySettings Settings,
    long RepeatedThrough = 0)
{
    /// <summary>How many of <see cref="Messages"/> the previous summary does not stand for yet.</summary>
    public int NewMessageCount => RepeatedThrough <= 0 ? Messages.Count : Messages.Count(m => m.Sequence > RepeatedThrough);
}

/// <summary>The merged summary and what it cost.</summary>
public sealed record SummaryMergeResult(string Text, int InputTokens, int OutputTokens);

/// <summary>Writes summaries incrementally: one chunk of messages at a time, on top of the summary so far.</summary>
public interface IConversationSummarizer
{
    /// <summary>"extractive" or "llm", recorded on each revision.</summary>
    string Name { get; }

    /// <summary>The model (or algorithm) recorded on each revision.</summary>
    string Model { get; }

    /// <summary>The prompt or algorithm version recorded on each revision.</summary>
    string PromptVersion { get; }

    Task<SummaryMergeResult> MergeAsync(SummaryMergeInput input, CancellationToken cancellationToken);
}

/// <summary>How messages read to a summarizer: who spoke and when.</summary>
internal static class MessageSpeakers
{
    private static readonly string[] SpeakerKeys = ["speaker", "name", "author", "user", "sender"];

    /// <summary>The speaker's name from the message metadata (speaker, name, author...), else its role.</summary>
    public static string Of(ConversationMessage message)
    {
        if (message.Metadata is { Count: > 0 } metadata)
        {
            foreach (var key in SpeakerKeys)
            {
                foreach (var (k, v) in metadata)
                {
                    if (string.Equals(k, key, StringComparison.OrdinalIgnoreCase) && !string.IsNullOrWhiteSpace(v))
                    {
                        return v.Trim();
                    }
                }
            }
        }

        return message.Role switch
        {
            MessageRole.User => "User",
            MessageRole.Assistant => "Assistant",
            MessageRole.System => "System",
            _ => "Tool",
        };
    }

    public static string Date(ConversationMessage message) => message.CreatedAt.UtcDateTime.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
}
