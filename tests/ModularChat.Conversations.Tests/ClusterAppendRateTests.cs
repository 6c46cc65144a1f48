using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using ModularChat.BuildingBlocks.Background;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>A host on a database of its own: the test moves its event sequence as another node's import would.</summary>
public sealed class ClusterRateApp() : ModularChatApp(TestDatabase("conversations_cluster_rate"));

/// <summary>
/// The cluster's append rate is read from the event store's sequence, so a node counts an import that another node
/// serves as a burst (the node that runs the projections is not necessarily the one the import reaches).
/// </summary>
public sealed class ClusterAppendRateTests(ClusterRateApp app) : IClassFixture<ClusterRateApp>
{
    [Fact]
    public async Task Events_appended_by_other_nodes_make_a_burst_here_and_its_end_ends_it()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var options = Options.Create(new BackgroundOptions { YieldAboveMessagesPerSecond = 5000 });
        var bursts = new AppendBursts(clock, options, app.Host.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>());
        var store = app.Host.Services.GetRequiredService<IDocumentStore>();
        var sampler = new ClusterAppendRate(store, bursts, options, clock, NullLogger<ClusterAppendRate>.Instance);

        await sampler.SampleAsync(CancellationToken.None);
        Assert.Equal(0, bursts.ClusterEventsPerSecond); // one reading is no rate yet

        // Another node appends 12,000 events within the second: each takes a number of the shared sequence.
        await TakeSequenceNumbersAsync(store, 12_000);
        clock.Advance(TimeSpan.FromSeconds(1));
        await sampler.SampleAsync(CancellationToken.None);
        Assert.Equal(12_000, bursts.ClusterEventsPerSecond);
        Assert.Equal(0, bursts.MessagesLastSecond);
        Assert.True(bursts.Bursting);

        // The next second nothing more: the burst is over.
        clock.Advance(TimeSpan.FromSeconds(1));
        await sampler.SampleAsync(CancellationToken.None);
        Assert.Equal(0, bursts.ClusterEventsPerSecond);
        Assert.False(bursts.Bursting);
    }

    private static async Task TakeSequenceNumbersAsync(IDocumentStore store, int count)
    {
        await using var connection = store.Storage.Database.CreateConnection();
        await connection.OpenAsync();
        await using var take = new NpgsqlCommand(
            $"select count(nextval('{store.Options.Events.DatabaseSchemaName}.mt_events_sequence')) from generate_series(1, {count})", connection);
        await take.ExecuteScalarAsync();
    }
}
