using JasperFx.Metadata;
using Marten.Metadata;

namespace ModularChat.Summaries.Domain;

/// <summary>
/// What the module knows of a conversation from its message events (the read model the strategy and the sweep use;
/// written only by the message-event handler). Id = the conversation id.
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
