using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Telemetry;

namespace ModularChat.Search.Tests;

/// <summary>
/// A host on a database of its own whose background work steps aside for any append (one message a second is a burst
/// here) and falls at most <see cref="MaxLag"/> behind.
/// </summary>
public sealed class BurstApp() : ModularChatApp(TestDatabase("search_bursts"))
{
    public static readonly TimeSpan MaxLag = TimeSpan.FromSeconds(8);

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Background:YieldAboveMessagesPerSecond"] = "1",
        ["Background:MaxYieldLag"] = MaxLag.ToString(),
        ["Search:Embeddings:PollInterval"] = "00:00:00.100",
    };
}

/// <summary>
/// Search indexing yields to a burst of appends on its node: while one tenant imports, what another appends waits to be
/// indexed, and is indexed when the import ends, or once it has waited the allowed lag if the import goes on.
/// </summary>
public sealed class BurstTests(BurstApp app) : IClassFixture<BurstApp>
{
    [Fact]
    public async Task Indexing_waits_while_another_tenant_imports_and_catches_up_when_the_import_ends()
    {
        using var reader = app.Client(ModularChatApp.NewUser());
        using var yielded = new MetricCollector<double>(app.Host.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.BackgroundYield);
        await using (var import = await Import.StartAsync(app))
        {
            await reader.StartConversation("during the import", Api.Message("the lighthouse keeper's ledger"));
            await Task.Delay(TimeSpan.FromSeconds(3)); // well inside the allowed lag
            Assert.Equal(0, (await reader.SearchStatus()).Entries);
        }

        await Eventually.Until(reader.SearchStatus, s => s.Entries == 1, seconds: Eventually.BackgroundSeconds, what: "The message was not indexed after the import");
        Assert.Single((await reader.Search("lighthouse")).Hits);
        Assert.Contains(yielded.GetMeasurementSnapshot(), m => (string?)m.Tags["work"] == "search.indexing" && m.Value > 1);
    }

    [Fact]
    public async Task Under_an_import_that_goes_on_indexing_falls_behind_no_further_than_the_allowed_lag()
    {
        using var reader = app.Client(ModularChatApp.NewUser());
        using var yielded = new MetricCollector<double>(app.Host.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.BackgroundYield);
        await using var import = await Import.StartAsync(app);
        await reader.StartConversation("during a long import", Api.Message("the lighthouse keeper's ledger"));
        var appended = Stopwatch.StartNew();

        await Eventually.Until(reader.SearchStatus, s => s.Entries == 1, seconds: 60, what: "The message was not indexed during the import");
        var indexedAfter = appended.Elapsed;
        var importedMeanwhile = import.Appended;
        // The import was still going on: it has not stopped (a failed step ends it) and goes on appending. One append took
        // longer than the 300 ms this once waited for it on a busy machine: wait for the next one instead.
        Assert.False(import.Stopped, "the import stopped");
        await Eventually.Until(() => Task.FromResult(import.Appended), n => n > importedMeanwhile, seconds: 30, what: "The import appended nothing more");
        Assert.True(indexedAfter >= BurstApp.MaxLag - TimeSpan.FromSeconds(1), $"indexed after {indexedAfter}, before the lag limit");

        // No further: the indexing waited for the import, each time at most until its oldest event was MaxLag old, as the
        // host measured its own waits (ended by the first poll after the limit: 100 ms, plus the scheduling of a busy machine).
        var waits = yielded.GetMeasurementSnapshot().Where(m => (string?)m.Tags["work"] == "search.indexing").Select(m => m.Value).ToList();
        // (Not one wait of the whole lag: on a busy machine the import's rate dips under the threshold now and then, and the
        // indexing waits in pieces; that it waited long enough in all is the indexing time above.)
        Assert.NotEmpty(waits);
        Assert.All(waits, w => Assert.True(w <= (BurstApp.MaxLag + TimeSpan.FromSeconds(3)).TotalSeconds, $"the indexing waited {w} s, beyond the lag limit"));
    }

    [Theory]
    [InlineData("Background:YieldAboveMessagesPerSecond", "-1")]
    [InlineData("Background:MaxYieldLag", "00:00:00")]
    public async Task A_host_with_a_bad_burst_setting_refuses_to_start_and_names_the_setting(string setting, string value)
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { [setting] = value }));
        Assert.Contains(Exceptions.Flatten(error), e => e is OptionsValidationException && e.Message.Contains(setting, StringComparison.Ordinal));
    }

    /// <summary>Another tenant appending a message every 50 ms until disposed: a burst for this host.</summary>
    private sealed class Import : IAsyncDisposable
    {
        private readonly HttpClient _client;
        private RepeatingLoad? _load;

        private Import(HttpClient client) => _client = client;

        public int Appended => _load?.Steps ?? 0;

        /// <summary>True once the import has ended (disposed, or an append failed).</summary>
        public bool Stopped => _load?.Stopped ?? true;

        /// <summary>Starts importing and returns once the host counts it as a burst.</summary>
        public static async Task<Import> StartAsync(BurstApp app)
        {
            var import = new Import(app.Client(ModularChatApp.NewUser("importer")));
            var conversation = await import._client.StartConversation("import");
            import._load = new RepeatingLoad(async i => await (await import._client.PostJson($"/api/conversations/{conversation}/messages", Api.Message($"imported line {i}")))
                .ReadAs<JsonElement>(HttpStatusCode.Created), TimeSpan.FromMilliseconds(50));
            var bursts = app.Host.Services.GetRequiredService<AppendBursts>();
            await Eventually.Until(() => Task.FromResult(bursts.Bursting && import.Appended >= 3), started => started, seconds: 30, what: "The import did not start");
            return import;
        }

        public async ValueTask DisposeAsync()
        {
            if (_load is not null)
            {
                await _load.DisposeAsync();
            }

            _client.Dispose();
        }
    }
}

/// <summary>The burst detector and the wait, on a fake clock.</summary>
public sealed class AppendBurstsTests : IDisposable
{
    private static readonly TimeSpan Step = TimeSpan.FromMilliseconds(100);
    private readonly ArmedTimers _clock = new(new FakeTimeProvider(new DateTimeOffset(2026, 12, 2, 12, 0, 0, TimeSpan.Zero)));
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();

    private IMeterFactory Meters => _services.GetRequiredService<IMeterFactory>();

    private AppendBursts Bursts(int threshold, int maxLagSeconds = 60) => new(_clock,
        Options.Create(new BackgroundOptions { YieldAboveMessagesPerSecond = threshold, MaxYieldLag = TimeSpan.FromSeconds(maxLagSeconds) }), Meters);

    [Fact]
    public void The_clusters_sampled_rate_is_a_burst_too_while_its_sample_is_fresh()
    {
        var bursts = Bursts(threshold: 1000);
        bursts.ObserveCluster(999);
        Assert.False(bursts.Bursting);
        bursts.ObserveCluster(1500); // another node imports: nothing appended here
        Assert.Equal(0, bursts.MessagesLastSecond);
        Assert.True(bursts.Bursting);

        _clock.Advance(AppendBursts.ClusterSampleLifetime + Step); // sampling stopped: the node goes by its own rate
        Assert.Equal(0, bursts.ClusterEventsPerSecond);
        Assert.False(bursts.Bursting);

        var never = Bursts(threshold: 0);
        never.ObserveCluster(1_000_000);
        Assert.False(never.Bursting);
    }

    [Fact]
    public void A_burst_is_the_threshold_reached_by_the_messages_of_the_last_second()
    {
        var bursts = Bursts(threshold: 1000);
        bursts.Record(600);
        _clock.Advance(TimeSpan.FromMilliseconds(500));
        Assert.False(bursts.Bursting);
        bursts.Record(400);
        Assert.Equal(1000, bursts.MessagesLastSecond);
        Assert.True(bursts.Bursting);

        _clock.Advance(TimeSpan.FromMilliseconds(600)); // the first 600 are more than a second old
        Assert.Equal(400, bursts.MessagesLastSecond);
        Assert.False(bursts.Bursting);
        _clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(0, bursts.MessagesLastSecond);

        var never = Bursts(threshold: 0);
        never.Record(1_000_000);
        Assert.False(never.Bursting);
    }

    [Fact]
    public async Task Yielding_waits_while_the_burst_lasts_and_counts_the_wait()
    {
        var bursts = Bursts(threshold: 100);
        using var yielded = new MetricCollector<double>(Meters, ModularChatTelemetry.SourceName, MetricNames.BackgroundYield);
        Assert.Equal(TimeSpan.Zero, await bursts.YieldAsync(_clock.GetUtcNow(), "test", CancellationToken.None)); // no burst: at once

        bursts.Record(100);
        var waiting = _clock.Watch(bursts.YieldAsync(_clock.GetUtcNow(), "test", CancellationToken.None).AsTask());
        for (var i = 0; i < 30; i++)
        {
            await StepAsync();
            bursts.Record(100);
            Assert.False(waiting.IsCompleted);
        }

        // The appends stop (the last at 3 s): the burst is over at 4 s, and the wait once the settle time has passed since.
        var waited = await FinishAsync(waiting, bursts);
        Assert.InRange(waited, TimeSpan.FromSeconds(3) + AppendBursts.BurstSettle - Step, TimeSpan.FromSeconds(3) + AppendBursts.BurstSettle + 2 * Step);
        var measurement = Assert.Single(yielded.GetMeasurementSnapshot());
        Assert.Equal(waited.TotalSeconds, measurement.Value, 6);
        Assert.Equal("test", measurement.Tags["work"]);
    }

    [Fact]
    public async Task A_moment_without_appends_inside_a_burst_does_not_end_the_wait()
    {
        var bursts = Bursts(threshold: 100);
        bursts.Record(100);
        var waiting = _clock.Watch(bursts.YieldAsync(_clock.GetUtcNow(), "test", CancellationToken.None).AsTask());

        // One commit of the import takes two seconds (a busy machine): for a second the node's rate is no burst.
        for (var i = 0; i < 20; i++)
        {
            await StepAsync();
        }

        Assert.False(bursts.Bursting);
        Assert.False(waiting.IsCompleted);
        Assert.True(bursts.ShouldDefer(_clock.GetUtcNow()));

        // The import goes on: so does the wait, until the appends stop.
        for (var i = 0; i < 10; i++)
        {
            bursts.Record(100);
            await StepAsync();
            Assert.False(waiting.IsCompleted);
        }

        var waited = await FinishAsync(waiting, bursts);
        Assert.InRange(waited, TimeSpan.FromSeconds(2.9) + AppendBursts.BurstSettle - Step, TimeSpan.FromSeconds(2.9) + AppendBursts.BurstSettle + 2 * Step);
    }

    [Fact]
    public async Task A_burst_that_goes_on_is_left_once_the_oldest_work_is_as_old_as_the_lag_limit()
    {
        var bursts = Bursts(threshold: 100, maxLagSeconds: 10);
        bursts.Record(100);
        var waiting = _clock.Watch(bursts.YieldAsync(_clock.GetUtcNow() - TimeSpan.FromSeconds(8), "test", CancellationToken.None).AsTask());
        var waited = await FinishAsync(waiting, bursts, appendMeanwhile: true);
        Assert.InRange(waited, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(2.1));
        Assert.True(bursts.Bursting);
    }

    [Fact]
    public void Work_that_reschedules_itself_is_put_off_during_a_burst_until_it_is_as_old_as_the_lag_limit()
    {
        var bursts = Bursts(threshold: 100, maxLagSeconds: 10);
        using var yielded = new MetricCollector<double>(Meters, ModularChatTelemetry.SourceName, MetricNames.BackgroundYield);
        var due = _clock.GetUtcNow();
        Assert.False(bursts.ShouldDefer(due)); // no burst

        bursts.Record(100);
        Assert.True(bursts.ShouldDefer(due));
        Assert.True(bursts.ShouldDefer(due - TimeSpan.FromSeconds(9.9)));
        Assert.False(bursts.ShouldDefer(due - TimeSpan.FromSeconds(10))); // as old as the limit: runs during the burst

        bursts.RecordDeferral(TimeSpan.FromSeconds(1), "summaries");
        var measurement = Assert.Single(yielded.GetMeasurementSnapshot());
        Assert.Equal(1.0, measurement.Value);
        Assert.Equal("summaries", measurement.Tags["work"]);
    }

    /// <summary>Moves the clock on in steps (appending a burst's worth at each when asked) until the wait is over.</summary>
    private async Task<TimeSpan> FinishAsync(Task<TimeSpan> waiting, AppendBursts bursts, bool appendMeanwhile = false)
    {
        for (var i = 0; i < 100 && !waiting.IsCompleted; i++)
        {
            await StepAsync();
            if (appendMeanwhile)
            {
                bursts.Record(100);
            }
        }

        Assert.True(waiting.IsCompleted, "still waiting after 10 s of clock");
        return await waiting;
    }

    /// <summary>
    /// One step of the fake clock, then until the waiting loop has taken it: it has either armed its next timer (a delay
    /// on this clock) or finished. The loop runs on the thread pool; this waits for what it did, not for an amount of time.
    /// </summary>
    private async Task StepAsync()
    {
        _clock.Advance(Step);
        var idle = Stopwatch.StartNew();
        while (_clock.Armed == 0 && !_clock.NothingWaits)
        {
            Assert.True(idle.Elapsed < TimeSpan.FromSeconds(30), "The waiting loop neither armed a timer nor finished");
            await Task.Yield();
        }
    }

    public void Dispose() => _services.Dispose();

    /// <summary>A fake clock that knows how many of its timers are armed (created, neither fired nor disposed).</summary>
    private sealed class ArmedTimers(FakeTimeProvider inner) : TimeProvider
    {
        private int _armed;
        private Task? _waiting;

        public int Armed => Volatile.Read(ref _armed);

        /// <summary>True when no wait is going on (none started, or it finished).</summary>
        public bool NothingWaits => _waiting is null or { IsCompleted: true };

        /// <summary>The wait whose timers <see cref="Armed"/> counts, for <see cref="NothingWaits"/>.</summary>
        public Task<TimeSpan> Watch(Task<TimeSpan> waiting)
        {
            _waiting = waiting;
            return waiting;
        }

        public void Advance(TimeSpan delta) => inner.Advance(delta);

        public override DateTimeOffset GetUtcNow() => inner.GetUtcNow();

        public override long GetTimestamp() => inner.GetTimestamp();

        public override long TimestampFrequency => inner.TimestampFrequency;

        public override TimeZoneInfo LocalTimeZone => inner.LocalTimeZone;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = new Timer(this);
            Interlocked.Increment(ref _armed);
            timer.Inner = inner.CreateTimer(s =>
            {
                timer.Disarm();
                callback(s);
            }, state, dueTime, period);
            return timer;
        }

        private sealed class Timer(ArmedTimers clock) : ITimer
        {
            private int _disarmed;

            public ITimer Inner { get; set; } = null!;

            public void Disarm()
            {
                if (Interlocked.Exchange(ref _disarmed, 1) == 0)
                {
                    Interlocked.Decrement(ref clock._armed);
                }
            }

            public bool Change(TimeSpan dueTime, TimeSpan period) => Inner.Change(dueTime, period);

            public void Dispose()
            {
                Disarm();
                Inner.Dispose();
            }

            public ValueTask DisposeAsync()
            {
                Disarm();
                return Inner.DisposeAsync();
            }
        }
    }
}
