namespace ModularChat.Summaries.Domain;

/// <summary>When summaries are due: milestones, then every <see cref="RepeatEvery"/> messages, or a token threshold, never closer than a minimum interval.</summary>
/// <param name="Milestones">Ascending message counts at which a summary is due.</param>
/// <param name="RepeatEvery">After the last milestone, a summary is due every this many messages.</param>
/// <param name="TokenThreshold">Tokens of unsummarized messages that make a summary due before the next milestone.</param>
/// <param name="MinInterval">Least time between two automatic summaries of one conversation.</param>
public sealed record StrategySettings(IReadOnlyList<long> Milestones, long RepeatEvery, long TokenThreshold, TimeSpan MinInterval);

/// <summary>What the strategy knows of a conversation.</summary>
/// <param name="MessageCount">Messages in the conversation (the latest sequence).</param>
/// <param name="CoveredTo">The last sequence the current summary covers (0: no summary).</param>
/// <param name="UnsummarizedTokens">Tokens of the messages after <paramref name="CoveredTo"/>.</param>
/// <param name="LastRevisedAt">When the current summary was written (null: none yet).</param>
public readonly record struct SummaryState(long MessageCount, long CoveredTo, long UnsummarizedTokens, DateTimeOffset? LastRevisedAt);

/// <summary>The strategy's answer: whether a summary is due, why, and not before when.</summary>
/// <param name="Reason">"milestone:N" or "tokens" when due.</param>
/// <param name="NotBefore">When due but the minimum interval has not passed: the earliest time to write it.</param>
public sealed record SummaryDecision(bool Due, string? Reason, DateTimeOffset? NotBefore)
{
    public static readonly SummaryDecision NotDue = new(false, null, null);
}

/// <summary>The summarization strategy: a pure function of the conversation's state, the settings and the time.</summary>
public static class SummaryStrategy
{
    public const string Tokens = "tokens";
    public const string Manual = "manual";
    public const string Resummarize = "resummarize";

    public static string MilestoneReason(long milestone) => $"milestone:{milestone}";

    public static SummaryDecision Decide(SummaryState state, StrategySettings settings, DateTimeOffset now)
    {
        if (state.MessageCount <= state.CoveredTo)
        {
            return SummaryDecision.NotDue;
        }

        var milestone = LastMilestoneAtOrBelow(state.MessageCount, settings);
        var reason = milestone > state.CoveredTo
            ? MilestoneReason(milestone)
            : state.UnsummarizedTokens >= settings.TokenThreshold ? Tokens : null;
        if (reason is null)
        {
            return SummaryDecision.NotDue;
        }

        var earliest = state.LastRevisedAt + settings.MinInterval;
        return new SummaryDecision(true, reason, earliest > now ? earliest : null);
    }

    /// <summary>The highest milestone at or below <paramref name="messageCount"/> (0 before the first).</summary>
    public static long LastMilestoneAtOrBelow(long messageCount, StrategySettings settings)
    {
        var listed = settings.Milestones;
        if (listed.Count == 0 || messageCount < listed[0])
        {
            return 0;
        }

        var last = listed[^1];
        if (messageCount >= last)
        {
            return last + ((messageCount - last) / settings.RepeatEvery * settings.RepeatEvery);
        }

        var found = 0L;
        foreach (var m in listed)
        {
            if (m > messageCount)
            {
                break;
            }

            found = m;
        }

        return found;
    }
}
