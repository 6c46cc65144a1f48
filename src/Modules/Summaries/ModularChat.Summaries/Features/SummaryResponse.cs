using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Features;

/// <summary>A summary revision as the API returns it, with its provenance.</summary>
/// <param name="FromSequence">First message covered (1: earlier revisions are folded in).</param>
/// <param name="ToSequence">Last message covered.</param>
/// <param name="TokenCount">Length of the text in o200k tokens.</param>
/// <param name="Reason">Why it was written: "milestone:N", "tokens", "manual" or "resummarize".</param>
/// <param name="InputTokens">Tokens read over all merge steps (previous summary and new messages, or the model's reported prompt tokens).</param>
/// <param name="OutputTokens">Tokens written over all merge steps.</param>
/// <param name="BasedOnRevision">The revision whose text this one merged new messages into (null: written from the messages alone, or stored before 2026-12-06).</param>
/// <param name="ReadFromSequence">The first message this revision read, through <paramref name="ToSequence"/> (null: it read none, or was stored before 2026-12-06).</param>
public record SummaryResponse(
    Guid ConversationId,
    int Revision,
    string Text,
    long FromSequence,
    long ToSequence,
    int TokenCount,
    string Reason,
    string Summarizer,
    string Model,
    string PromptVersion,
    string Variant,
    int InputTokens,
    int OutputTokens,
    double DurationMs,
    DateTimeOffset RevisedAt,
    int? BasedOnRevision,
    long? ReadFromSequence)
{
    internal static SummaryResponse From(SummaryView v, ITokenCounter tokens)
        => new(v.Id, v.Revision, v.Text, v.FromSequence, v.ToSequence, tokens.Count(v.Text), v.Reason, v.Summarizer, v.Model, v.PromptVersion,
            v.Variant, v.InputTokens, v.OutputTokens, Math.Round(v.Duration.TotalMilliseconds, 1), v.RevisedAt, v.BasedOnRevision, v.ReadFromSequence);
}

/// <summary>The current summary and how far behind the conversation it is.</summary>
public sealed record CurrentSummaryResponse : SummaryResponse
{
    internal CurrentSummaryResponse(SummaryResponse summary, long messageCount)
        : base(summary)
    {
        MessageCount = messageCount;
        PendingMessages = Math.Max(0, messageCount - summary.ToSequence);
    }

    /// <summary>Messages in the conversation now.</summary>
    public long MessageCount { get; init; }

    /// <summary>Messages after the summary's coverage (the next revision folds them in).</summary>
    public long PendingMessages { get; init; }
}
