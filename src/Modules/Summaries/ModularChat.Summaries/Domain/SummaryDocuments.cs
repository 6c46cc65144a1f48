using JasperFx.Metadata;
using Marten.Metadata;

namespace ModularChat.Summaries.Domain;

/// <summary>
/// What the module knows of a conversation from its message events (the read model the strategy and the sweep use;
/// written by the message-event handler, and by a sweep that finds it behind the conversation). Id = the conversation id.
/// </summary>
public sealed class ConversationActivity : ITenanted, IVersioned
{
    public Guid Id { get; set; }

    public string? TenantId { get; set; }

    public Guid Version { get; set; }

    /// <summary>The latest message sequence seen (the conversation's message count).</summary>
    public long LastSequence { get; set; }

    /// <summary>Tokens of every message seen.</summary>
    public long TotalTokens { get; set; }

    public DateTimeOffset LastAppendedAt { get; set; }

    /// <summary>The sequence the last queued job was asked to cover; a job is pending while the coverage is below it.</summary>
    public long PendingUpTo { get; set; }

    /// <summary>When that job was due to start (later than it was queued when it waits for the minimum interval).</summary>
    public DateTimeOffset? PendingAt { get; set; }

    /// <summary>
    /// The message count a sweep last brought this row up to from the conversation's own counts (0: never). The tokens of
    /// messages 1..this are counted already: a notice about them that arrives later adds nothing.
    /// </summary>
    public long CaughtUpTo { get; set; }
}

/// <summary>How far a conversation's summary goes (written only by summarization jobs, with each revision). Id = the conversation id.</summary>
public sealed class SummaryProgress : ITenanted
{
    public Guid Id { get; set; }

    public string? TenantId { get; set; }

    public long CoveredTo { get; set; }

    /// <summary>Tokens of the messages 1..<see cref="CoveredTo"/>.</summary>
    public long CoveredTokens { get; set; }

    public int Revision { get; set; }

    public DateTimeOffset RevisedAt { get; set; }

    /// <summary>The rebuild (resummarize run) the summary was last rebuilt by.</summary>
    public Guid? RebuildId { get; set; }
}

/// <summary>
/// Which job is writing a conversation's next revision, until when (taken before the model is called, in its own short
/// transaction; optimistic concurrency makes two takers of the same claim conflict). A second job for that revision puts
/// itself off while the claim holds instead of paying for the same summary; an expired claim (its node died) can be taken
/// over. Id = the conversation id.
/// </summary>
public sealed class SummaryClaim : ITenanted, IVersioned
{
    public Guid Id { get; set; }

    public string? TenantId { get; set; }

    public Guid Version { get; set; }

    /// <summary>The revision being written.</summary>
    public int Revision { get; set; }

    /// <summary>The envelope of the job writing it (its retries keep the claim).</summary>
    public Guid JobId { get; set; }

    /// <summary>When the claim lapses: the job's timeout after it was taken, by when the job has ended one way or the other.</summary>
    public DateTimeOffset Until { get; set; }
}
