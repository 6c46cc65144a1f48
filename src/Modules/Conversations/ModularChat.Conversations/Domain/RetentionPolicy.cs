using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Domain;

/// <summary>What a conversation keeps of the messages a summary already covers.</summary>
public enum RetentionPolicyKind
{
    /// <summary>Keep every message (the default).</summary>
    KeepAll,

    /// <summary>Keep the last N messages; delete older ones once a summary covers them.</summary>
    KeepLastN,

    /// <summary>Archive what a summary covers, except the last N messages.</summary>
    ArchiveAfterSummary,

    /// <summary>Delete what a summary covers, except the last N messages.</summary>
    DeleteAfterSummary,
}

/// <summary>A policy as configured: what to do, and how many of the latest messages always stay.</summary>
/// <param name="MaxMessagesPerStep">
/// The most messages one step archives or deletes (0: no limit); the rest is done by the steps that follow at once.
/// </param>
public sealed record RetentionPolicy(RetentionPolicyKind Kind, int KeepLast, int MaxMessagesPerStep = 0)
{
    public static readonly IReadOnlyDictionary<string, RetentionPolicyKind> Names = new Dictionary<string, RetentionPolicyKind>(StringComparer.OrdinalIgnoreCase)
    {
        ["keep-all"] = RetentionPolicyKind.KeepAll,
        ["keep-last-n"] = RetentionPolicyKind.KeepLastN,
        ["archive-after-summary"] = RetentionPolicyKind.ArchiveAfterSummary,
        ["delete-after-summary"] = RetentionPolicyKind.DeleteAfterSummary,
    };

    public string Name => Names.First(n => n.Value == Kind).Key;

    public RetentionAction? Action => Kind switch
    {
        RetentionPolicyKind.ArchiveAfterSummary => RetentionAction.Archived,
        RetentionPolicyKind.KeepLastN or RetentionPolicyKind.DeleteAfterSummary => RetentionAction.Deleted,
        _ => null,
    };
}

/// <summary>A range of messages retention should archive or delete now.</summary>
public sealed record RetentionStep(RetentionAction Action, long FromSequence, long ToSequence);

/// <summary>The retention rule, as a pure function of a conversation's state, its summary coverage and the policy.</summary>
public static class RetentionRule
{
    /// <summary>
    /// The next range to archive or delete, or null. A message is only ever touched when a stored summary
    /// covers it (sequence &lt;= <paramref name="summaryThrough"/>) and it is not among the last
    /// <see cref="RetentionPolicy.KeepLast"/> messages; ranges already retained are never touched again. A step holds
    /// at most <see cref="RetentionPolicy.MaxMessagesPerStep"/> messages: it is read into memory and written in one
    /// transaction that holds the conversation's lock, which appends to it wait for.
    /// </summary>
    public static RetentionStep? Next(long messageCount, long retainedThrough, long? summaryThrough, RetentionPolicy policy)
    {
        if (policy.Action is not { } action || summaryThrough is not { } covered)
        {
            return null;
        }

        var through = Math.Min(covered, messageCount - policy.KeepLast);
        if (policy.MaxMessagesPerStep > 0)
        {
            through = Math.Min(through, retainedThrough + policy.MaxMessagesPerStep);
        }

        return through > retainedThrough ? new RetentionStep(action, retainedThrough + 1, through) : null;
    }
}
