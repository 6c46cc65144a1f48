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
    }
}
