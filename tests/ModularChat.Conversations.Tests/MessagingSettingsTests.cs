using Microsoft.Extensions.DependencyInjection;
using Wolverine.Runtime;

namespace ModularChat.Conversations.Tests;

/// <summary>The Messaging settings reach Wolverine (the fixture sets them away from their defaults).</summary>
[Collection(AppCollection.Name)]
public sealed class MessagingSettingsTests(ConversationsApp app)
{
    [Fact]
    public void The_configured_intervals_and_lifetimes_are_the_ones_Wolverine_runs_with()
    {
        var durability = app.Host.Services.GetRequiredService<IWolverineRuntime>().Options.Durability;

        Assert.Equal(TimeSpan.FromSeconds(7), durability.HealthCheckPollingTime);
        Assert.Equal(TimeSpan.FromSeconds(25), durability.StaleNodeTimeout);
        Assert.Equal(TimeSpan.FromSeconds(1), durability.KeepAfterMessageHandling);
        Assert.Equal(TimeSpan.FromSeconds(1), durability.HandledMessageCleanupPollingTime);
        Assert.True(durability.DeadLetterQueueExpirationEnabled);
        Assert.Equal(TimeSpan.FromDays(3), durability.DeadLetterQueueExpiration);
    }

    [Fact]
    public async Task Dead_letters_are_kept_until_replayed_when_their_retention_is_zero_as_by_default()
    {
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Messaging:DeadLetterRetention"] = "00:00:00" });

        Assert.False(node.Services.GetRequiredService<IWolverineRuntime>().Options.Durability.DeadLetterQueueExpirationEnabled);
    }
}
