using Microsoft.Extensions.DependencyInjection;
using Npgsql;
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
    public async Task With_a_retention_of_zero_dead_letters_are_kept_and_the_expiry_column_of_the_other_nodes_stays()
    {
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Messaging:DeadLetterRetention"] = "00:00:00" });

        var durability = node.Services.GetRequiredService<IWolverineRuntime>().Options.Durability;
        Assert.True(durability.DeadLetterQueueExpiration > TimeSpan.FromDays(99 * 365), $"kept for {durability.DeadLetterQueueExpiration}");
        // Wolverine's expiry column exists only while its expiration is on: a node with it off dropped the column when it
        // started, and the fixture's nodes (3 days) failed to write or delete expiring dead letters.
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        Assert.Equal(1L, await connection.ScalarAsync(
            "select count(*) from information_schema.columns where table_schema = 'modularchat' and table_name = 'wolverine_dead_letters' and column_name = 'expires'"));
    }
}
