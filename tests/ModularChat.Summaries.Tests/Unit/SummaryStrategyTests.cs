using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Tests.Unit;

/// <summary>The strategy is a pure function: state + settings + time in, decision out.</summary>
public sealed class SummaryStrategyTests
{
    private static readonly DateTimeOffset Now = new(2025, 1, 1, 12, 0, 0, TimeSpan.Zero);

    private static readonly StrategySettings Defaults = new([10, 25, 50, 100, 200, 500], 500, 4000, TimeSpan.FromMinutes(1));

    private static SummaryDecision Decide(long messages, long covered = 0, long tokens = 0, DateTimeOffset? revisedAt = null, StrategySettings? settings = null)
        => SummaryStrategy.Decide(new SummaryState(messages, covered, tokens, revisedAt), settings ?? Defaults, Now);

    [Theory]
    [InlineData(9, 0)]
    [InlineData(10, 10)]
    [InlineData(24, 10)]
    [InlineData(25, 25)]
    [InlineData(499, 200)]
    [InlineData(500, 500)]
    [InlineData(999, 500)]
    [InlineData(1000, 1000)]
    [InlineData(1499, 1000)]
    [InlineData(20_250, 20_000)]
    public void Milestones_are_the_listed_counts_then_every_500(long messages, long milestone)
        => Assert.Equal(milestone, SummaryStrategy.LastMilestoneAtOrBelow(messages, Defaults));

    [Fact]
    public void Nothing_is_due_before_the_first_milestone()
        => Assert.False(Decide(9, tokens: 100).Due);

    [Fact]
    public void The_first_summary_is_due_at_the_first_milestone()
    {
        var decision = Decide(10, tokens: 300);
        Assert.True(decision.Due);
        Assert.Equal("milestone:10", decision.Reason);
        Assert.Null(decision.NotBefore);
    }

    [Fact]
    public void A_milestone_already_covered_is_not_due_again()
        => Assert.False(Decide(24, covered: 12, tokens: 200, revisedAt: Now.AddHours(-1)).Due);

    [Fact]
    public void A_milestone_passed_since_the_coverage_is_due_even_when_counts_jumped_over_several()
    {
        var decision = Decide(130, covered: 20, tokens: 100, revisedAt: Now.AddHours(-1));
        Assert.Equal((true, "milestone:100"), (decision.Due, decision.Reason));
    }

    [Fact]
    public void Enough_unsummarized_tokens_make_a_summary_due_before_the_next_milestone()
    {
        var decision = Decide(30, covered: 25, tokens: 4000, revisedAt: Now.AddHours(-1));
        Assert.Equal((true, "tokens"), (decision.Due, decision.Reason));
        Assert.False(Decide(30, covered: 25, tokens: 3999, revisedAt: Now.AddHours(-1)).Due);
    }

    [Fact]
    public void Tokens_count_before_the_first_milestone_too()
        => Assert.Equal("tokens", Decide(3, tokens: 5000).Reason);

    [Fact]
    public void A_due_summary_waits_for_the_minimum_interval_after_the_last_one()
    {
        var revisedAt = Now.AddSeconds(-20);
        var decision = Decide(50, covered: 25, tokens: 500, revisedAt: revisedAt);
        Assert.True(decision.Due);
        Assert.Equal(revisedAt.AddMinutes(1), decision.NotBefore);
    }

    [Fact]
    public void Nothing_new_is_never_due()
        => Assert.False(Decide(100, covered: 100, tokens: 99_999).Due);

    [Fact]
    public void Settings_shape_the_decision()
    {
        var settings = new StrategySettings([3], 2, 50, TimeSpan.Zero);
        Assert.Equal("milestone:3", Decide(3, settings: settings).Reason);
        Assert.Equal("milestone:7", Decide(8, covered: 5, revisedAt: Now, settings: settings).Reason);
        Assert.Equal("tokens", Decide(8, covered: 7, tokens: 50, revisedAt: Now, settings: settings).Reason);
    }
}
