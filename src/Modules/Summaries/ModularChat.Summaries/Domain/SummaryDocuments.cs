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

    /// <summary>
    /// The sequence the last queued job was asked to cover; a job is pending while the coverage is below it. 0 once a
    /// revision covers it or its job found nothing due (no job pending).
    /// </summary>
    public long PendingUpTo { get; set; }

    /// <summary>When that job was due to start (later than it was queued when it waits for the minimum interval).</summary>
    public DateTimeOffset? PendingAt { get; set; }

    /// <summary>
    /// Every message 1..this has its tokens in <see cref="TotalTokens"/>: a notice about them (delivered twice, or late after a
    /// sweep brought this row up to the conversation's own counts) adds nothing.
    /// </summary>
    public long CountedTo { get; set; }

    /// <summary>
    /// Message ranges above <see cref="CountedTo"/> counted before a range below them (their notices came first: another node's,
    /// or a retried batch), in order, disjoint and not adjacent. Empty unless notices arrive out of order.
    /// </summary>
    public List<CountedRange> CountedAhead { get; set; } = [];

    /// <summary>Gaps kept below counted ranges at most: past it, the lowest gap (most likely a lost notice) is given up as counted.</summary>
    public const int MaxCountedAhead = 16;

    /// <summary>
    /// The last message of the highest gap given up as counted (<see cref="MaxCountedAhead"/>), 0 when none: its messages'
    /// tokens may be missing from <see cref="TotalTokens"/> (a late notice about them is taken for a repeat) until a sweep
    /// brings the row up to the conversation's own counts, which clears it. Without it, once the other gaps closed the row
    /// would look complete and the sweep would pass it by.
    /// </summary>
    public long GapGivenUpTo { get; set; }

    /// <summary>
    /// Records that the messages <paramref name="from"/>..<paramref name="to"/> (one append transaction's) are counted;
    /// false when they were already, so the caller adds their tokens only on true. Transactions store disjoint ranges and
    /// a notice is wholly counted or not at all, so containment is the test.
    /// </summary>
    public bool Count(long from, long to)
    {
        if (CountedTo == 0 && CountedAhead.Count == 0 && LastSequence > 0)
        {
            // A row written before ranges were recorded: everything it saw was counted.
            CountedTo = LastSequence;
        }

        if (to <= CountedTo || CountedAhead.Exists(r => r.From <= from && to <= r.To))
        {
            return false;
        }

        if (CountedAhead.Count == 0 && from <= CountedTo + 1)
        {
            CountedTo = to; // in order, the usual case
            return true;
        }

        CountedAhead.Add(new CountedRange(Math.Max(from, CountedTo + 1), to));
        CountedAhead.Sort((a, b) => a.From.CompareTo(b.From));
        var merged = new List<CountedRange>(CountedAhead.Count);
        foreach (var range in CountedAhead)
        {
            if (merged.Count > 0 && range.From <= merged[^1].To + 1)
            {
                merged[^1] = merged[^1] with { To = Math.Max(merged[^1].To, range.To) };
            }
            else
            {
                merged.Add(range);
            }
        }

        while (merged.Count > MaxCountedAhead)
        {
            GapGivenUpTo = Math.Max(GapGivenUpTo, merged[0].From - 1);
            CountedTo = merged[0].To;
            merged.RemoveAt(0);
        }

        CountedAhead = merged;
        AbsorbAhead();
        return true;
    }

    /// <summary>A sweep brought the row up to the conversation's own counts: messages 1..<paramref name="messageCount"/> are all counted.</summary>
    public void CountedUpTo(long messageCount)
    {
        CountedTo = Math.Max(CountedTo, messageCount);
        if (messageCount >= GapGivenUpTo)
        {
            GapGivenUpTo = 0;
        }

        AbsorbAhead();
    }

    /// <summary>Moves the ranges counted ahead that now reach down to <see cref="CountedTo"/> (a gap closed) into it.</summary>
    private void AbsorbAhead()
    {
        while (CountedAhead.Count > 0 && CountedAhead[0].From <= CountedTo + 1)
        {
            CountedTo = Math.Max(CountedTo, CountedAhead[0].To);
            CountedAhead.RemoveAt(0);
        }
    }
}

/// <summary>Message sequences <paramref name="From"/>..<paramref name="To"/> (inclusive).</summary>
public sealed record CountedRange(long From, long To);

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
