using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Summaries.Jobs;
using ModularChat.Testing;
using ModularChat.Testing.Fakes;
using Npgsql;
using Wolverine;

namespace ModularChat.Benchmarks;

/// <summary>
/// Summaries under load, each figure against a baseline of the same run:
/// <list type="bullet">
/// <item>append p99 on a host whose Summaries module is off (no subscription) and on (summarizing while it is measured): their ratio;</item>
/// <item>summary lag (commit of the milestone message to the revision) under many concurrent conversations, with the extractive
/// summarizer and with an OpenAI-compatible stub that answers after 200 ms;</item>
/// <item>peak memory of summarizing a 20,000-message backlog against a 1,000-message one (bounded by the chunk, not the backlog).</item>
/// </list>
/// </summary>
internal sealed class SummaryBenchmark(Measurements results)
{
    private const int Clients = AppendBenchmark.Clients;
    private const int LagConversations = 32;
    private const int LagMessages = 100;
    private static readonly long[] LagMilestones = [10, 25, 50, 100];
    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(6);

    /// <summary>
    /// Appends per second of the latency comparison (BENCH_SUMMARIES_RATE): 16 conversations at ~9 messages a second each, a
    /// heavy chat load that leaves the two shared cores some room (near their limit, the figure measures queueing, not appends).
    /// </summary>
    private static readonly int AppendRate = int.TryParse(Environment.GetEnvironmentVariable("BENCH_SUMMARIES_RATE"), out var rate) ? rate : 150;
    private static readonly TimeSpan Measure = TimeSpan.FromSeconds(double.TryParse(Environment.GetEnvironmentVariable("BENCH_SECONDS"), out var s) ? s : 10);

    public async Task RunAsync()
    {
        // BENCH_SUMMARIES=appends,lag,memory (default: all) runs only some parts while tuning.
        var parts = (Environment.GetEnvironmentVariable("BENCH_SUMMARIES") ?? "appends,lag,memory").Split(',', StringSplitOptions.TrimEntries);
        if (parts.Contains("memory"))
        {
            await PeakMemoryAsync();
        }

        if (parts.Contains("appends") || parts.Contains("lag"))
        {
            await AppendsAndLagAsync(parts.Contains("appends"), parts.Contains("lag"));
        }
    }

    /// <summary>
    /// Rounds of the same append load on a host with the module off, then on (alternating, pooled, so neither side gets the
    /// quieter minutes of a shared machine); the lag runs follow on the last host with the module on.
    /// </summary>
    private async Task AppendsAndLagAsync(bool appends, bool lag)
    {
        await using var stub = await FakeOpenAiServer.StartAsync();
        stub.Responder = request => new FakeReply(
            "The participants planned the trip, booked the hotel near the river and agreed on the museum tickets.", Delay: TimeSpan.FromMilliseconds(200));
        var extractiveTenant = $"bench-lag-extractive-{Guid.NewGuid():N}";
        var llmTenant = $"bench-lag-llm-{Guid.NewGuid():N}";
        var on = new Dictionary<string, string>
        {
            // Summaries while appends are measured: a revision per conversation every 5 s (the default minimum interval is 1 min).
            ["Summaries__MinInterval"] = Environment.GetEnvironmentVariable("BENCH_SUMMARIES_MIN_INTERVAL") ?? "00:00:05",
            ["Summaries__Llm__Endpoint"] = stub.BaseUrl.ToString(),
            ["Summaries__Llm__Model"] = "stub-200ms",
            // Lag runs: no minimum interval, so the lag is queueing and summarizing, not waiting by design.
            ["Summaries__Variants__lag__MinInterval"] = "00:00:00",
            ["Summaries__Variants__lag-llm__MinInterval"] = "00:00:00",
            ["Summaries__Variants__lag-llm__Summarizer"] = "llm",
            [$"Summaries__TenantVariants__{extractiveTenant}"] = "lag",
            [$"Summaries__TenantVariants__{llmTenant}"] = "lag-llm",
        };
        var off = new Dictionary<string, string> { ["Summaries__Enabled"] = "false" };

        if (Environment.GetEnvironmentVariable("BENCH_SUMMARIES_PROBE") is "1")
        {
            await using var existing = BenchEnvironment.FromEnvironment();
            await existing.StartAsync();
            var probe = await AppendLoadAsync(existing, "probe");
            results.Add("probe_p99", probe.Percentile(99));
            return;
        }

        var rounds = appends ? (int.TryParse(Environment.GetEnvironmentVariable("BENCH_SUMMARIES_ROUNDS"), out var r) ? r : 2) : 0;
        Latencies offLatencies = new(), onLatencies = new();
        long revisions = 0;
        for (var round = 1; round <= rounds; round++)
        {
            // ABBA order (off-on, on-off, ...): a drift of the shared machine over the run weighs on both sides alike.
            foreach (var phase in round % 2 == 1 ? new[] { "off", "on" } : ["on", "off"])
            {
                await using var host = await FreshHostAsync($"{phase}{round}", phase == "on" ? on : off);
                if (phase == "off")
                {
                    offLatencies.AddAll(await AppendLoadAsync(host.Environment, "off"));
                    continue;
                }

                var (latencies, written) = await CountingRevisionsAsync(host.Environment, () => AppendLoadAsync(host.Environment, "on"));
                onLatencies.AddAll(latencies);
                revisions += written;
                if (round == rounds && lag)
                {
                    await LagRunsAsync(host.Environment, extractiveTenant, llmTenant);
                }
            }
        }

        if (rounds > 0)
        {
            results.Add("summaries_append_p99_off_ms", offLatencies.Percentile(99));
            results.Add("summaries_append_p99_on_ms", onLatencies.Percentile(99));
            results.Add("summaries_append_p99_on_vs_off_ratio", onLatencies.Percentile(99) / offLatencies.Percentile(99));
            results.Add("summaries_append_p50_on_vs_off_ratio", onLatencies.Percentile(50) / offLatencies.Percentile(50));
            results.Add("summaries_revisions_during_append_measurement", revisions);
        }
        else if (lag)
        {
            await using var host = await FreshHostAsync("lag", on);
            await LagRunsAsync(host.Environment, extractiveTenant, llmTenant);
        }
    }

    /// <summary>
    /// A host on a database of its own, created for it (and dropped when it stops): no phase inherits another's tables, bloat
    /// or queued jobs (a stopped host's durable envelopes would otherwise be recovered by the next one).
    /// </summary>
    private static async Task<PhaseHost> FreshHostAsync(string phase, Dictionary<string, string> settings)
    {
        var shared = BenchEnvironment.FromEnvironment();
        var server = new NpgsqlConnectionStringBuilder(shared.PostgresConnectionString);
        var database = $"{server.Database}_summaries_{phase}";
        await RecreateAsync(server, database, create: true);
        var cs = new NpgsqlConnectionStringBuilder(shared.PostgresConnectionString) { Database = database }.ConnectionString;
        var host = new PhaseHost(new BenchEnvironment { PostgresConnectionString = cs, RedisConnectionString = shared.RedisConnectionString, SigningKey = shared.SigningKey },
            () => RecreateAsync(server, database, create: false));
        await host.Environment.StartAsync(settings);
        return host;
    }

    internal static async Task RecreateAsync(NpgsqlConnectionStringBuilder server, string database, bool create)
    {
        var admin = new NpgsqlConnectionStringBuilder(server.ConnectionString) { Database = "postgres", Pooling = false };
        await using var connection = new NpgsqlConnection(admin.ConnectionString);
        await connection.OpenAsync();
        await using (var drop = new NpgsqlCommand($"drop database if exists \"{database}\" with (force)", connection))
        {
            await drop.ExecuteNonQueryAsync();
        }

        if (create)
        {
            await using var make = new NpgsqlCommand($"create database \"{database}\"", connection);
            await make.ExecuteNonQueryAsync();
        }
    }

    /// <summary>A started host and the cleanup of its database.</summary>
    private sealed class PhaseHost(BenchEnvironment environment, Func<Task> dropDatabase) : IAsyncDisposable
    {
        public BenchEnvironment Environment { get; } = environment;

        public async ValueTask DisposeAsync()
        {
            await Environment.DisposeAsync();
            await dropDatabase();
        }
    }

    private async Task LagRunsAsync(BenchEnvironment host, string extractiveTenant, string llmTenant)
    {
        var extractive = await LagAsync(host, extractiveTenant);
        results.Add("summary_lag_extractive_p50_ms", extractive.Percentile(50));
        results.Add("summary_lag_extractive_p95_ms", extractive.Percentile(95));
        var llm = await LagAsync(host, llmTenant);
        results.Add("summary_lag_llm_stub_200ms_p50_ms", llm.Percentile(50));
        results.Add("summary_lag_llm_stub_200ms_p95_ms", llm.Percentile(95));
    }

    /// <summary>
    /// Appends at a fixed rate (open loop: each request is due at its time whatever the previous ones did, and its latency
    /// counts from when it was due), so the figure is what a request meets on a busy but not saturated host, not how long it
    /// queued behind a closed loop of clients that saturate the two cores. The saturated throughput is the append scenario's.
    /// </summary>
    private static async Task<Latencies> AppendLoadAsync(BenchEnvironment host, string label)
    {
        using var http = host.Client($"bench-summaries-{label}-{Guid.NewGuid():N}", Clients * 4);
        var conversations = await AppendBenchmark.CreateConversationsAsync(http, Clients);
        var sent = new int[Clients];
        Console.Error.WriteLine($"[bench] appends at {AppendRate}/s with summaries {label}");

        // The warm-up is a closed-loop burst of its own (every code path compiled, tiered and prepared, summaries started), so a
        // stall while the host warms up cannot leave the measured run a backlog to drain.
        await Load.RunAsync(Clients, WarmUp, TimeSpan.Zero, async client =>
        {
            var i = sent[client]++;
            using var response = await http.PostAsJsonAsync($"/api/conversations/{conversations[client]}/messages",
                new { role = i % 2 == 0 ? "user" : "assistant", content = AppendBenchmark.Payload(client, i), externalId = $"m-{i}" });
            response.EnsureSuccessStatusCode();
            return 1;
        });
        var latencies = new Latencies();
        await OpenLoopAsync(http, conversations, sent, Measure, latencies);
        Console.Error.WriteLine($"[bench] summaries {label}: {latencies.Count} appends measured, p50 {latencies.Percentile(50):0.0} ms, p99 {latencies.Percentile(99):0.0} ms");
        return latencies;
    }

    private static async Task OpenLoopAsync(HttpClient http, Guid[] conversations, int[] sent, TimeSpan duration, Latencies latencies)
    {
        var interval = TimeSpan.FromSeconds((double)Clients / AppendRate);
        var start = System.Diagnostics.Stopwatch.GetTimestamp();
        await Parallel.ForEachAsync(Enumerable.Range(0, Clients), new ParallelOptions { MaxDegreeOfParallelism = Clients }, async (client, _) =>
        {
            // Conversations start out of phase so the requests spread evenly over each interval.
            for (var due = interval * client / Clients; due < duration; due += interval)
            {
                var wait = due - System.Diagnostics.Stopwatch.GetElapsedTime(start);
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait);
                }

                var i = Interlocked.Increment(ref sent[client]) - 1;
                using var response = await http.PostAsJsonAsync($"/api/conversations/{conversations[client]}/messages",
                    new { role = i % 2 == 0 ? "user" : "assistant", content = AppendBenchmark.Payload(client, i), externalId = $"m-{i}" });
                response.EnsureSuccessStatusCode();
                var late = (System.Diagnostics.Stopwatch.GetElapsedTime(start) - due).TotalMilliseconds;
                latencies.Add(late);
                if (late > 500 && Environment.GetEnvironmentVariable("BENCH_SUMMARIES_PROBE") is "1")
                {
                    Console.Error.WriteLine($"[probe] {DateTime.UtcNow:HH:mm:ss.fff} client {client} due {due.TotalSeconds:0.00}s late {late:0} ms");
                }
            }
        });
    }

    /// <summary>Runs <paramref name="work"/> and counts the summary revisions written meanwhile (all tenants).</summary>
    private static async Task<(T Result, long Revisions)> CountingRevisionsAsync<T>(BenchEnvironment host, Func<Task<T>> work)
    {
        await using var connection = new NpgsqlConnection(host.PostgresConnectionString);
        await connection.OpenAsync();
        async Task<long> Count()
        {
            await using var command = new NpgsqlCommand("select count(*) from modularchat.mt_doc_summaryrevisionview", connection);
            return (long)(await command.ExecuteScalarAsync())!;
        }

        var before = await Count();
        var result = await work();
        return (result, await Count() - before);
    }

    /// <summary>
    /// <see cref="LagConversations"/> conversations of <see cref="LagMessages"/> messages appended at once by <see cref="Clients"/>
    /// clients; the lag of each milestone revision is its revision time minus the append time of the milestone message.
    /// </summary>
    private static async Task<Latencies> LagAsync(BenchEnvironment host, string tenant)
    {
        using var http = host.Client(tenant, Clients);
        var conversations = await AppendBenchmark.CreateConversationsAsync(http, LagConversations);
        Console.Error.WriteLine($"[bench] summary lag for {tenant}: {LagConversations} conversations x {LagMessages} messages");
        await Parallel.ForEachAsync(Enumerable.Range(0, Clients), async (client, ct) =>
        {
            for (var i = 0; i < LagMessages; i++)
            {
                foreach (var c in Enumerable.Range(0, LagConversations).Where(c => c % Clients == client))
                {
                    using var response = await http.PostAsJsonAsync($"/api/conversations/{conversations[c]}/messages",
                        new { role = i % 2 == 0 ? "user" : "assistant", content = AppendBenchmark.Payload(c, i) }, ct);
                    response.EnsureSuccessStatusCode();
                }
            }
        });

        // The lag of milestone m: from the commit of message m to the first revision that covers it (a revision may cover several).
        var lags = new Latencies();
        var deadline = DateTime.UtcNow.AddMinutes(3);
        foreach (var conversation in conversations)
        {
            var revisions = await RevisionsAsync(http, conversation);
            while (revisions.Select(r => r.ToSequence).DefaultIfEmpty().Max() < LagMessages && DateTime.UtcNow < deadline)
            {
                await Task.Delay(250);
                revisions = await RevisionsAsync(http, conversation);
            }

            foreach (var milestone in LagMilestones)
            {
                var revision = revisions.Where(r => r.ToSequence >= milestone).MinBy(r => r.RevisedAt);
                if (revision is null)
                {
                    continue;
                }

                var message = await http.GetFromJsonAsync<JsonElement>($"/api/conversations/{conversation}/messages/{milestone}");
                lags.Add((revision.RevisedAt - message.GetProperty("appendedAt").GetDateTimeOffset()).TotalMilliseconds);
            }
        }

        Console.Error.WriteLine($"[bench] {lags.Count} of {LagConversations * LagMilestones.Length} milestones measured for {tenant}");
        return lags;
    }

    private static async Task<List<Revision>> RevisionsAsync(HttpClient http, Guid conversation)
    {
        var page = await http.GetFromJsonAsync<JsonElement>($"/api/conversations/{conversation}/summaries?limit=100");
        return page.GetProperty("items").EnumerateArray()
            .Select(r => new Revision(r.GetProperty("reason").GetString()!, r.GetProperty("toSequence").GetInt64(), r.GetProperty("revisedAt").GetDateTimeOffset()))
            .ToList();
    }

    /// <summary>
    /// Summarizes a 1,000- and a 20,000-message backlog in this process (an in-process host on its own database, automatic
    /// summaries off) and samples the managed heap while each job runs: reading in chunks, the peak is the chunk's, not the backlog's.
    /// </summary>
    private async Task PeakMemoryAsync()
    {
        var database = new NpgsqlConnectionStringBuilder(BenchEnvironment.FromEnvironment().PostgresConnectionString).Database + "_summaries_memory";
        // Outside a test project the in-process host needs to be told where its content root is.
        Environment.SetEnvironmentVariable("ASPNETCORE_TEST_CONTENTROOT_MODULARCHAT_HOST", Path.Combine(BenchEnvironment.RepositoryRoot(), "src", "Host"));
        var app = new BackgroundSummariesOff(database);
        await app.InitializeAsync();
        try
        {
            var small = await PeakWhileSummarizingAsync(app, 1_000);
            var large = await PeakWhileSummarizingAsync(app, 20_000);
            results.Add("summary_peak_memory_1k_backlog_mb", small / 1024.0 / 1024.0);
            results.Add("summary_peak_memory_20k_backlog_mb", large / 1024.0 / 1024.0);
            results.Add("summary_peak_memory_20k_vs_1k_ratio", (double)large / small);
        }
        finally
        {
            await app.DisposeAsync();
            await RecreateAsync(new NpgsqlConnectionStringBuilder(BenchEnvironment.FromEnvironment().PostgresConnectionString), database, create: false);
        }
    }

    private static async Task<long> PeakWhileSummarizingAsync(ModularChatApp app, int backlog)
    {
        var tenant = ModularChatApp.NewUser("bench-memory");
        using var http = app.Client(tenant);
        var id = (await (await http.PostAsJsonAsync("/api/conversations", new { title = $"backlog {backlog}" })).Content.ReadFromJsonAsync<JsonElement>())
            .GetProperty("id").GetGuid();
        Console.Error.WriteLine($"[bench] seeding a {backlog}-message backlog");
        for (var first = 0; first < backlog; first += 1000)
        {
            var messages = Enumerable.Range(first, Math.Min(1000, backlog - first)).Select(i => new
            {
                role = i % 2 == 0 ? "user" : "assistant",
                content = AppendBenchmark.Payload(i % 7, i),
                metadata = new Dictionary<string, string> { ["speaker"] = i % 2 == 0 ? "Alice" : "Bob" },
            });
            using var response = await http.PostAsJsonAsync($"/api/conversations/{id}/messages/batch", new { messages });
            response.EnsureSuccessStatusCode();
        }

        var bus = app.Host.Services.GetRequiredService<IMessageBus>();
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        var baseline = GC.GetTotalMemory(forceFullCollection: true);
        var peak = baseline;
        using var stop = new CancellationTokenSource();
        var sampler = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                peak = Math.Max(peak, GC.GetTotalMemory(forceFullCollection: false));
                Thread.Sleep(1);
            }
        });
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        await bus.InvokeForTenantAsync(tenant, new SummarizeConversation(id, backlog, "manual"), CancellationToken.None, TimeSpan.FromMinutes(10));
        var elapsed = System.Diagnostics.Stopwatch.GetElapsedTime(started);
        await stop.CancelAsync();
        await sampler;
        Console.Error.WriteLine($"[bench] {backlog}-message backlog summarized in {elapsed.TotalSeconds:0.0} s, peak heap growth {(peak - baseline) / 1024.0 / 1024.0:0.0} MB");
        return peak - baseline;
    }

    private sealed record Revision(string Reason, long ToSequence, DateTimeOffset RevisedAt);

    /// <summary>
    /// An in-process host whose automatic summaries are off: the backlog builds up untouched until the job runs. One job
    /// folds the whole backlog (no <c>Summaries:MaxChunksPerJob</c>), so the peak is that of the backlog measured.
    /// </summary>
    private sealed class BackgroundSummariesOff(string database) : ModularChatApp(database)
    {
        protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
        {
            ["Summaries:Enabled"] = "false",
            ["Summaries:MaxChunksPerJob"] = "0",
            ["Summaries:Sweep:Interval"] = "00:00:00",
            ["Logging:LogLevel:Default"] = "Warning",
        };
    }
}
