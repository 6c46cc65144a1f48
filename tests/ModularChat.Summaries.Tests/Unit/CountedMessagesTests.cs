using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Tests.Unit;

/// <summary>
/// <see cref="ConversationActivity.Count"/>: which append notices add their tokens. Notices are delivered at least once and,
/// across nodes and retries, not always in order.
/// </summary>
public sealed class CountedMessagesTests
{
    /// <summary>Counts the notices in order as the scheduler does; returns which were counted.</summary>
    private static bool[] Count(ConversationActivity activity, params (long From, long To)[] notices)
        => [.. notices.Select(n =>
        {
            var counted = activity.Count(n.From, n.To);
            activity.LastSequence = Math.Max(activity.LastSequence, n.To);
            return counted;
        })];

    [Fact]
    public void Notices_in_order_are_each_counted_once_and_a_repeat_of_any_is_not()
    {
        var activity = new ConversationActivity();
        Assert.Equal([true, true, true], Count(activity, (1, 3), (4, 4), (5, 9)));
        Assert.Equal((9L, 0), (activity.CountedTo, activity.CountedAhead.Count));

        Assert.Equal([false, false, false], Count(activity, (4, 4), (1, 3), (5, 9)));
        Assert.Equal(9L, activity.CountedTo);
    }

    [Fact]
    public void A_notice_that_overtakes_an_earlier_one_is_counted_and_so_is_the_earlier_one_when_it_comes()
    {
        var activity = new ConversationActivity();
        Assert.Equal([true, true, true], Count(activity, (1, 2), (6, 8), (10, 10)));
        Assert.Equal(2L, activity.CountedTo);
        Assert.Equal([new CountedRange(6, 8), new CountedRange(10, 10)], activity.CountedAhead);

        // Repeats of the ranges counted ahead add nothing either.
        Assert.Equal([false, false], Count(activity, (6, 8), (10, 10)));

        // The missing ranges close the gaps, in either order: one range counted from the start again.
        Assert.Equal([true, true], Count(activity, (9, 9), (3, 5)));
        Assert.Equal((10L, 0), (activity.CountedTo, activity.CountedAhead.Count));
        Assert.Equal([false], Count(activity, (3, 5)));
    }

    [Fact]
    public void Adjacent_ranges_counted_ahead_are_kept_as_one()
    {
        var activity = new ConversationActivity();
        Count(activity, (1, 1), (5, 6), (3, 4), (7, 7));
        Assert.Equal([new CountedRange(3, 7)], activity.CountedAhead);
        Assert.Equal(1L, activity.CountedTo);
    }

    [Fact]
    public void A_sweep_that_counted_a_conversation_from_its_own_counts_makes_every_notice_up_to_there_a_repeat()
    {
        var activity = new ConversationActivity();
        Count(activity, (1, 2), (5, 5));
        activity.CountedUpTo(6);

        Assert.Equal((6L, 0), (activity.CountedTo, activity.CountedAhead.Count));
        Assert.Equal([false, false, true], Count(activity, (3, 4), (6, 6), (7, 7)));
    }

    [Fact]
    public void A_sweep_that_counts_up_to_just_below_a_range_counted_ahead_closes_the_gap()
    {
        // Messages 3-4's notice was lost, 5's came: the sweep's counts reach 4, so nothing is missing any more.
        var activity = new ConversationActivity();
        Count(activity, (1, 2), (5, 5));
        activity.CountedUpTo(4);

        Assert.Equal((5L, 0), (activity.CountedTo, activity.CountedAhead.Count));
    }

    [Fact]
    public void Past_the_most_gaps_kept_the_lowest_gap_is_given_up_as_counted()
    {
        // Every other message's notice lost (dead-lettered, say): the ranges counted ahead stay bounded.
        var activity = new ConversationActivity();
        Count(activity, (1, 1));
        for (var sequence = 3L; sequence <= 3 + (2 * ConversationActivity.MaxCountedAhead); sequence += 2)
        {
            Assert.Equal([true], Count(activity, (sequence, sequence)));
        }

        Assert.Equal(ConversationActivity.MaxCountedAhead, activity.CountedAhead.Count);
        Assert.Equal(3L, activity.CountedTo);
        Assert.Equal(new CountedRange(5, 5), activity.CountedAhead[0]);
        // The lost message 2's notice, if it comes after all, is taken for a repeat; the next gap's is still counted.
        Assert.Equal([false, true], Count(activity, (2, 2), (4, 4)));
        Assert.Equal(5L, activity.CountedTo);
        // The given-up gap stays marked for the sweep, which counts from the conversation's own figures.
        Assert.Equal(2L, activity.GapGivenUpTo);
        activity.CountedUpTo(40);
        Assert.Equal((0L, 40L, 0), (activity.GapGivenUpTo, activity.CountedTo, activity.CountedAhead.Count));
    }

    [Fact]
    public void A_row_written_before_counted_ranges_were_kept_takes_all_it_saw_as_counted()
    {
        var activity = new ConversationActivity { LastSequence = 12, TotalTokens = 400 };
        Assert.Equal([false, true], Count(activity, (11, 12), (13, 14)));
        Assert.Equal((14L, 0), (activity.CountedTo, activity.CountedAhead.Count));
    }
}
