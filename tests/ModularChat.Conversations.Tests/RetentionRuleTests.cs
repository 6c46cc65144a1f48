using Microsoft.Extensions.Configuration;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;
using ModularChat.Conversations.Features.Retention;

namespace ModularChat.Conversations.Tests;

/// <summary>The retention rule as a pure function: no host, no database.</summary>
public sealed class RetentionRuleTests
{
    private static readonly RetentionPolicy Delete20 = new(RetentionPolicyKind.DeleteAfterSummary, 20);

    [Fact]
    public void A_tenants_override_applies_whatever_the_case_its_configuration_keys_are_written_in()
    {
        // Configuration merges keys that differ only in case: the two sources make one override, for a tenant written in a third case.
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?> { ["Retention:Tenants:Acme:Policy"] = "delete-after-summary" })
            .AddInMemoryCollection(new Dictionary<string, string?> { ["RETENTION:TENANTS:ACME:KEEPLAST"] = "5" })
            .Build();
        var options = new RetentionOptions();
        configuration.GetSection(RetentionOptions.Section).Bind(options);

        Assert.Equal(new RetentionPolicy(RetentionPolicyKind.DeleteAfterSummary, 5, options.MaxMessagesPerStep), options.For("acme"));
        Assert.Equal(new RetentionPolicy(RetentionPolicyKind.KeepAll, 20, options.MaxMessagesPerStep), options.For("acme-two"));
    }

    [Fact]
    public void Keep_all_never_removes_anything()
        => Assert.Null(RetentionRule.Next(1000, 0, 1000, new RetentionPolicy(RetentionPolicyKind.KeepAll, 0)));

    [Fact]
    public void A_message_never_summarized_is_never_removed()
        => Assert.Null(RetentionRule.Next(1000, 0, summaryThrough: null, Delete20));

    [Fact]
    public void Only_messages_the_summary_covers_are_removed()
        => Assert.Equal(new RetentionStep(RetentionAction.Deleted, 1, 50), RetentionRule.Next(100, 0, 50, Delete20));

    [Fact]
    public void The_last_N_messages_stay_even_when_covered()
        => Assert.Equal(new RetentionStep(RetentionAction.Deleted, 1, 80), RetentionRule.Next(100, 0, 100, Delete20));

    [Fact]
    public void A_conversation_shorter_than_N_keeps_everything()
        => Assert.Null(RetentionRule.Next(15, 0, 15, Delete20));

    [Fact]
    public void A_range_already_retained_is_not_touched_again()
    {
        Assert.Null(RetentionRule.Next(100, 80, 100, Delete20));
        Assert.Equal(new RetentionStep(RetentionAction.Deleted, 81, 130), RetentionRule.Next(150, 80, 150, Delete20));
    }

    [Theory]
    [InlineData(RetentionPolicyKind.KeepLastN, RetentionAction.Deleted)]
    [InlineData(RetentionPolicyKind.ArchiveAfterSummary, RetentionAction.Archived)]
    [InlineData(RetentionPolicyKind.DeleteAfterSummary, RetentionAction.Deleted)]
    public void Each_policy_has_its_action(RetentionPolicyKind kind, RetentionAction action)
        => Assert.Equal(action, RetentionRule.Next(100, 0, 100, new RetentionPolicy(kind, 10))!.Action);

    [Fact]
    public void Keep_last_n_keeps_exactly_n()
    {
        var step = RetentionRule.Next(57, 0, 57, new RetentionPolicy(RetentionPolicyKind.KeepLastN, 7))!;
        Assert.Equal(57 - 7, step.ToSequence);
    }

    [Fact]
    public void A_long_covered_history_is_retained_in_steps_of_at_most_the_configured_size()
    {
        var capped = new RetentionPolicy(RetentionPolicyKind.ArchiveAfterSummary, 20, MaxMessagesPerStep: 2000);

        Assert.Equal(new RetentionStep(RetentionAction.Archived, 1, 2000), RetentionRule.Next(10_000, 0, 10_000, capped));
        Assert.Equal(new RetentionStep(RetentionAction.Archived, 8001, 9980), RetentionRule.Next(10_000, 8000, 10_000, capped));
        Assert.Null(RetentionRule.Next(10_000, 9980, 10_000, capped));
        Assert.Equal(new RetentionStep(RetentionAction.Archived, 1, 9980), RetentionRule.Next(10_000, 0, 10_000, capped with { MaxMessagesPerStep = 0 }));
    }
}
