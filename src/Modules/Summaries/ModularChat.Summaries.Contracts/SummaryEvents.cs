namespace ModularChat.Summaries.Contracts;

/// <summary>
/// A new summary revision of a conversation, with its provenance. It is the event of the conversation's
/// summary stream (one per conversation, separate from the conversation's own stream) and is forwarded to
/// Wolverine when it commits, so retention, search and caches react to it.
/// </summary>
/// <param name="ConversationId">The summarized conversation.</param>
/// <param name="Revision">1 for the first summary, then one more per revision.</param>
/// <param name="Text">The summary.</param>
/// <param name="FromSequence">First message sequence covered (1: summaries always cover from the start, earlier revisions folded in).</param>
/// <param name="ToSequence">Last message sequence covered.</param>
/// <param name="Reason">Why the strategy asked for it (e.g. "milestone:50", "tokens", "manual", "resummarize").</param>
/// <param name="Summarizer">Which summarizer wrote it ("extractive", "llm").</param>
/// <param name="Model">The model (or algorithm version) that wrote it.</param>
/// <param name="PromptVersion">Version of the prompt or algorithm parameters.</param>
/// <param name="Variant">The configuration variant (A/B) the tenant was on.</param>
/// <param name="InputTokens">Tokens read (previous summary + new messages).</param>
/// <param name="OutputTokens">Tokens of <paramref name="Text"/>.</param>
/// <param name="Duration">How long summarizing took.</param>
/// <param name="RevisedAt">When the revision was stored.</param>
/// <param name="BasedOnRevision">
/// The revision whose text this one merged the messages it read into: the previous one, or on a rebuild after retention
/// deleted messages the one that covered them; null when written from the messages alone (the first summary, a rebuild
/// from the first message), and on revisions stored before 2026-12-06.
/// </param>
/// <param name="ReadFromSequence">
/// The first message this revision read (it read on through <paramref name="ToSequence"/>); null when it read none (a
/// rebuild that restates the revision covering deleted messages) and on revisions stored before 2026-12-06.
/// </param>
public sealed record SummaryRevised(
    Guid ConversationId,
    int Revision,
    string Text,
    long FromSequence,
    long ToSequence,
    string Reason,
    string Summarizer,
    string Model,
    string PromptVersion,
    string Variant,
    int InputTokens,
    int OutputTokens,
    TimeSpan Duration,
    DateTimeOffset RevisedAt,
    int? BasedOnRevision = null,
    long? ReadFromSequence = null);
