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

    /// <summary>
    /// A node stopping while PostgreSQL takes connections but does not answer: the sample on its way fails after the stop
    /// began (Npgsql's connect waits out its own timeout, whatever the token says), and the sampler ends quietly. It
    /// let that failure out, and the host logged "BackgroundService failed" at Error and a Critical "the IHost instance is
    /// stopping" for a node that was stopping anyway.
    /// </summary>
    [Fact]
    public async Task A_sample_that_fails_while_the_node_stops_ends_the_sampler_quietly()
    {
        var database = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString);
        await using var proxy = new TcpProxy(database.Host!, database.Port);
        var throughProxy = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString) { Host = "127.0.0.1", Port = proxy.Port, Timeout = 3 };
        using var store = DocumentStore.For(throughProxy.ConnectionString);
        var options = Options.Create(new BackgroundOptions { YieldAboveMessagesPerSecond = 5000 });
        var bursts = new AppendBursts(TimeProvider.System, options, app.Host.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>());
        using var sampler = new ClusterAppendRate(store, bursts, options, TimeProvider.System, NullLogger<ClusterAppendRate>.Instance);

        proxy.Stall();
        await sampler.StartAsync(CancellationToken.None);
        await Task.Delay(TimeSpan.FromSeconds(1.5)); // the first sample (after 1 s) waits for an answer
        using var stopWait = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await sampler.StopAsync(stopWait.Token);
        proxy.Restore();

        Assert.True(sampler.ExecuteTask!.IsCompleted, "The sampler did not end within 30 s of the stop");
        Assert.False(sampler.ExecuteTask.IsFaulted, $"The sampler ended with {sampler.ExecuteTask.Exception?.InnerException?.GetType().Name}");
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
