using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Testing;
using Npgsql;

namespace ModularChat.Benchmarks;

/// <summary>
/// The context endpoint and its cache, and what retention saves, on an in-process host (so the host's own cache metric
/// can be read; every figure with a target is a ratio within the run):
/// <list type="bullet">
/// <item>context requests per second and p99 with the cache on against the cache off (the baseline), phases in ABBA order;</item>
/// <item>the cache hit ratio during a simulated chat: append the user's message, read the context, append the answer, read it again;</item>
/// <item>bytes a 10,000-message conversation keeps in the event and message tables under each retention policy, once its summary
/// covers it and retention has run, against keep-all.</item>
/// </list>
/// </summary>
internal sealed class ContextBenchmark(Measurements results)
{
    private const int Clients = 8;
    private const int Conversations = 50;
    private const int MessagesPerConversation = 200;
    private const int MaxTokens = 2000;
    private const int ChatTurnsPerClient = 25;
    private const int PolicyMessages = 10_000;
    private const int KeepLast = 20;
    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan Measure = TimeSpan.FromSeconds(5);
    private static readonly string[] Policies = ["keep-all", "keep-last-n", "archive-after-summary", "delete-after-summary"];

    public async Task RunAsync()
    {
        var shared = BenchEnvironment.FromEnvironment();
        var server = new NpgsqlConnectionStringBuilder(shared.PostgresConnectionString);
        var database = server.Database + "_context_bench";
        await SummaryBenchmark.RecreateAsync(server, database, create: true);
        Environment.SetEnvironmentVariable("ASPNETCORE_TEST_CONTENTROOT_MODULARCHAT_HOST", Path.Combine(BenchEnvironment.RepositoryRoot(), "src", "Host"));
        var app = new ContextBenchApp(database);
        await app.InitializeAsync();
        using var lookups = new CacheLookupRecorder();
        try
        {
            await ThroughputAsync(app);
            await SimulatedChatAsync(app, lookups);
            await StorageAsync(app, new NpgsqlConnectionStringBuilder(shared.PostgresConnectionString) { Database = database }.ConnectionString);
        }
        finally
        {
            await app.DisposeAsync();
            await SummaryBenchmark.RecreateAsync(server, database, create: false);
        }
    }

    private async Task ThroughputAsync(ContextBenchApp app)
    {
        using var http = app.Client(ModularChatApp.NewUser("bench-context"));
        Console.Error.WriteLine($"[bench] context: {Conversations} conversations of {MessagesPerConversation} messages");
        var ids = new List<Guid>();
        for (var c = 0; c < Conversations; c++)
        {
            var id = await NewConversationAsync(http, $"context {c}");
            var messages = Enumerable.Range(0, MessagesPerConversation).Select(i => new { role = i % 2 == 0 ? "user" : "assistant", content = AppendBenchmark.Payload(c, i) });
            (await http.PostAsJsonAsync($"/api/conversations/{id}/messages/batch", new { messages })).EnsureSuccessStatusCode();
            ids.Add(id);
        }

        var on = new Latencies();
        var off = new Latencies();
        double onRate = 0, offRate = 0;
        foreach (var cached in new[] { true, false, false, true })
        {
            app.SetCache(cached);
            var turn = 0;
            var (rate, latencies) = await Load.RunAsync(Clients, WarmUp, Measure, async _ =>
            {
                var id = ids[Interlocked.Increment(ref turn) % ids.Count];
                using var response = await http.GetAsync($"/api/conversations/{id}/context?maxTokens={MaxTokens}");
                response.EnsureSuccessStatusCode();
                return 1;
            });
            (cached ? on : off).AddAll(latencies);
            if (cached)
            {
                onRate += rate / 2;
            }
            else
            {
                offRate += rate / 2;
            }
        }

        app.SetCache(true);
        results.Add("context_cached_per_second", onRate);
        results.Add("context_cached_p99_ms", on.Percentile(99));
        results.Add("context_uncached_per_second", offRate);
        results.Add("context_uncached_p99_ms", off.Percentile(99));
        results.Add("context_cached_vs_uncached_ratio", onRate / offRate);
        results.Add("context_p99_cached_vs_uncached_ratio", on.Percentile(99) / off.Percentile(99));
    }

    private async Task SimulatedChatAsync(ContextBenchApp app, CacheLookupRecorder lookups)
    {
        Console.Error.WriteLine($"[bench] context: simulated chat, {Clients} clients x {ChatTurnsPerClient} turns");
        using var http = app.Client(ModularChatApp.NewUser("bench-chat-cache"));
        var ids = new List<Guid>();
        for (var c = 0; c < Clients; c++)
        {
            var id = await NewConversationAsync(http, $"chat {c}");
            // Past the first summary milestone, so every context carries a summary as in a long chat.
            var messages = Enumerable.Range(0, 30).Select(i => new { role = i % 2 == 0 ? "user" : "assistant", content = AppendBenchmark.Payload(c, i) });
            (await http.PostAsJsonAsync($"/api/conversations/{id}/messages/batch", new { messages })).EnsureSuccessStatusCode();
            (await http.PostAsync($"/api/conversations/{id}/summary", null)).EnsureSuccessStatusCode();
            ids.Add(id);
        }

        foreach (var id in ids)
        {
            await WaitUntilAsync(async () => (await http.GetAsync($"/api/conversations/{id}/summary")).IsSuccessStatusCode, TimeSpan.FromMinutes(2));
        }

        lookups.Clear();
        await Task.WhenAll(ids.Select(async id =>
        {
            for (var turn = 0; turn < ChatTurnsPerClient; turn++)
            {
                foreach (var role in new[] { "user", "assistant" })
                {
                    (await http.PostAsJsonAsync($"/api/conversations/{id}/messages", new { role, content = AppendBenchmark.Payload(turn, turn) })).EnsureSuccessStatusCode();
                    (await http.GetAsync($"/api/conversations/{id}/context?maxTokens={MaxTokens}")).EnsureSuccessStatusCode();
                }
            }
        }));

        var (hits, misses) = lookups.Totals(null);
        var (contextHits, contextMisses) = lookups.Totals("context");
        var (summaryHits, summaryMisses) = lookups.Totals("summary");
        results.Add("chat_cache_lookups", hits + misses);
        results.Add("chat_cache_hit_ratio", hits / Math.Max(1.0, hits + misses));
        results.Add("chat_context_cache_hit_ratio", contextHits / Math.Max(1.0, contextHits + contextMisses));
        results.Add("chat_summary_cache_hit_ratio", summaryHits / Math.Max(1.0, summaryHits + summaryMisses));
    }

    private async Task StorageAsync(ContextBenchApp app, string connectionString)
    {
        Console.Error.WriteLine($"[bench] context: a {PolicyMessages}-message conversation under each retention policy");
        var measured = await Task.WhenAll(Policies.Select(async policy =>
        {
            var tenant = ContextBenchApp.TenantFor(policy);
            using var http = app.Client(tenant);
            var id = await NewConversationAsync(http, policy);
            for (var first = 0; first < PolicyMessages; first += 1000)
            {
                var messages = Enumerable.Range(first, 1000).Select(i => new { role = i % 2 == 0 ? "user" : "assistant", content = AppendBenchmark.Payload(i % 7, i) });
                (await http.PostAsJsonAsync($"/api/conversations/{id}/messages/batch", new { messages })).EnsureSuccessStatusCode();
            }

            (await http.PostAsync($"/api/conversations/{id}/summary", null)).EnsureSuccessStatusCode();
            await WaitUntilAsync(async () => await CoveredToAsync(http, id) >= PolicyMessages, TimeSpan.FromMinutes(5));
            if (policy != "keep-all")
            {
                await WaitUntilAsync(async () =>
                {
                    var view = await http.GetFromJsonAsync<JsonElement>($"/api/conversations/{id}/retention");
                    return view.GetProperty("hot").GetProperty("fromSequence").GetInt64() == PolicyMessages - KeepLast + 1;
                }, TimeSpan.FromMinutes(2));
            }

            return (Policy: policy, Bytes: await BytesAsync(connectionString, tenant, id));
        }));

        var keepAll = measured.Single(m => m.Policy == "keep-all").Bytes;
        foreach (var (policy, bytes) in measured)
        {
            var name = policy.Replace('-', '_');
            results.Add($"storage_{name}_bytes", bytes);
            if (policy != "keep-all")
            {
                results.Add($"storage_{name}_vs_keep_all_ratio", (double)bytes / keepAll);
            }
        }
    }

    /// <summary>Bytes of the conversation's rows in the event store, the hot message table and the archive.</summary>
    private static async Task<long> BytesAsync(string connectionString, string tenant, Guid id)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            """
            select (select coalesce(sum(pg_column_size(e.*)), 0) from modularchat.mt_events e where e.tenant_id = $1 and e.stream_id = $2)
                 + (select coalesce(sum(pg_column_size(m.*)), 0) from modularchat.mt_doc_storedmessage m where m.tenant_id = $1 and m.data->>'ConversationId' = $2::text)
                 + (select coalesce(sum(pg_column_size(a.*)), 0) from modularchat.mt_doc_archivedmessage a where a.tenant_id = $1 and a.data->>'ConversationId' = $2::text)
            """, connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter { Value = id });
        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }

    private static async Task<long> CoveredToAsync(HttpClient http, Guid id)
    {
        using var response = await http.GetAsync($"/api/conversations/{id}/summary");
        return response.IsSuccessStatusCode ? (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("toSequence").GetInt64() : 0;
    }

    private static async Task<Guid> NewConversationAsync(HttpClient http, string title)
    {
        using var response = await http.PostAsJsonAsync("/api/conversations", new { title });
        response.EnsureSuccessStatusCode();
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetGuid();
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"not done within {timeout}");
            }

            await Task.Delay(250);
        }
    }

    /// <summary>An in-process host with a retention policy per benchmark tenant and the cache switchable at run time.</summary>
    private sealed class ContextBenchApp(string database) : ModularChatApp(database)
    {
        public static string TenantFor(string policy) => $"bench-retention-{policy}";

        protected override IDictionary<string, string?> Settings
        {
            get
            {
                var settings = new Dictionary<string, string?>
                {
                    ["Logging:LogLevel:Default"] = "Warning",
                    ["Summaries:MinInterval"] = "00:00:00",
                    ["Summaries:Sweep:Interval"] = "00:00:00",
                    ["Context:CacheEnabled"] = "true",
                };
                foreach (var policy in Policies)
                {
                    settings[$"Retention:Tenants:{TenantFor(policy)}:Policy"] = policy;
                    settings[$"Retention:Tenants:{TenantFor(policy)}:KeepLast"] = KeepLast.ToString(System.Globalization.CultureInfo.InvariantCulture);
                }

                return settings;
            }
        }

        /// <summary>Turns the context cache on or off in the running host (options are read per request).</summary>
        public void SetCache(bool enabled)
        {
            var configuration = (IConfigurationRoot)Host.Services.GetRequiredService<IConfiguration>();
            configuration["Context:CacheEnabled"] = enabled ? "true" : "false";
            configuration.Reload();
        }
    }
}
