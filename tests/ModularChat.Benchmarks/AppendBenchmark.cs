using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json;
using Npgsql;

namespace ModularChat.Benchmarks;

/// <summary>
/// Appends through the HTTP API against raw single-row INSERTs of the same payloads, with the same
/// concurrency, into a plain table on the same PostgreSQL: the baseline is measured in the same run. A second baseline,
/// an append's database work done by hand (<see cref="AppendWorkByHandAsync"/>), is measured beside it.
/// </summary>
internal sealed class AppendBenchmark(BenchEnvironment env, Measurements results)
{
    public const int Clients = 16;
    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(3);
    /// <summary>
    /// The single appends' warm-up: a fresh host's JIT is still compiling tier-1 code (~30% of the host's CPU 25 s into
    /// this load, ~20,000 methods during it), and 12 s of warm-up measured ~40% fewer appends per second than 45 s.
    /// </summary>
    private static readonly TimeSpan AppendWarmUp = Seconds("BENCH_APPEND_WARMUP_SECONDS", 45);

    /// <summary>The batches' warm-up, after the single appends: the host is warm by then.</summary>
    private static readonly TimeSpan BatchWarmUp = Seconds("BENCH_BATCH_WARMUP_SECONDS", 12);
    private static readonly TimeSpan Measure = Seconds("BENCH_SECONDS", 10);

    /// <summary>The longest the benchmark waits for the batches to be indexed.</summary>
    private static readonly TimeSpan CatchUpLimit = TimeSpan.FromMinutes(10);

    private static TimeSpan Seconds(string variable, double fallback)
        => TimeSpan.FromSeconds(double.TryParse(Environment.GetEnvironmentVariable(variable), CultureInfo.InvariantCulture, out var s) ? s : fallback);

    /// <summary>A typical chat turn: a few sentences.</summary>
    public static string Payload(int client, int i) =>
        $"Client {client} turn {i}: I was thinking about the trip to Lisbon next month, and whether we should " +
        "book the hotel near the river or the one in Alfama. The river one has better reviews, but Alfama is " +
        "closer to the restaurants we liked. What do you think we should do about the museum tickets?";

    public async Task RunAsync()
    {
        // The baseline first, while the host is idle: measured last, it shared the machine with the indexing of
        // everything the batch phase had just appended and came out two to four times too low.
        var raw = await RawInsertsAsync();
        var appendWork = await AppendWorkByHandAsync();
        // The host gets a longer warm-up than the rest (AppendWarmUp): its JIT tiers, connection pool and PostgreSQL's
        // per-connection prepared statements settle under load.
        var (appendRate, appendLatencies) = await SingleAppendsAsync();
        var batchRate = await BatchAppendsAsync();

        results.Add("append_per_second", appendRate);
        results.Add("append_p50_ms", appendLatencies.Percentile(50));
        results.Add("append_p99_ms", appendLatencies.Percentile(99));
        results.Add("batch_messages_per_second", batchRate);
        results.Add("raw_insert_per_second", raw);
        results.Add("append_vs_raw_insert_ratio", appendRate / raw);
        results.Add("batch_vs_raw_insert_ratio", batchRate / raw);
        results.Add("append_work_per_second", appendWork);
        results.Add("append_vs_append_work_ratio", appendRate / appendWork);
    }

    private async Task<double> RawInsertsAsync()
    {
        var builder = new NpgsqlConnectionStringBuilder(env.PostgresConnectionString) { MaxPoolSize = Clients + 4 };
        await using var dataSource = NpgsqlDataSource.Create(builder.ConnectionString);
        await using (var setup = dataSource.CreateCommand(
            "drop table if exists bench_raw_insert; create table bench_raw_insert (id bigserial primary key, conversation_id uuid not null, role text not null, content text not null, created_at timestamptz not null)"))
        {
            await setup.ExecuteNonQueryAsync();
        }

        var conversations = Enumerable.Range(0, Clients).Select(_ => Guid.NewGuid()).ToArray();
        var counters = new int[Clients];
        var (rate, _) = await Load.RunAsync(Clients, WarmUp, Measure, async client =>
        {
            await using var command = dataSource.CreateCommand(
                "insert into bench_raw_insert (conversation_id, role, content, created_at) values ($1, $2, $3, $4)");
            command.Parameters.Add(new NpgsqlParameter { Value = conversations[client] });
            command.Parameters.Add(new NpgsqlParameter { Value = "user" });
            command.Parameters.Add(new NpgsqlParameter { Value = Payload(client, counters[client]++) });
            command.Parameters.Add(new NpgsqlParameter { Value = DateTimeOffset.UtcNow });
            await command.ExecuteNonQueryAsync();
            return 1;
        });
        await using (var drop = dataSource.CreateCommand("drop table bench_raw_insert"))
        {
            await drop.ExecuteNonQueryAsync();
        }

        return rate;
    }

    /// <summary>
    /// A second baseline, for the decision ADR 0011 asks of the team (issue 2's ratio is against <see cref="RawInsertsAsync"/>,
    /// one row per transaction): the database work of an append done by hand, with the same payloads and concurrency, each
    /// client on a conversation of its own. One transaction per message, sent as one batch: the stream's version raised,
    /// the event row (unique on stream and version), the message's document and the conversation's snapshot upserted,
    /// all JSONB as Marten stores them. Less than an append does (no lock-and-read round trip before the write, no
    /// external-id check, no notice envelope, no Redis, no HTTP, no token count): a floor of the database part only.
    /// </summary>
    private async Task<double> AppendWorkByHandAsync()
    {
        var builder = new NpgsqlConnectionStringBuilder(env.PostgresConnectionString) { MaxPoolSize = Clients + 4 };
        await using var dataSource = NpgsqlDataSource.Create(builder.ConnectionString);
        const string Tables = "bench_work_streams, bench_work_events, bench_work_documents, bench_work_snapshots";
        await using (var setup = dataSource.CreateCommand($"""
            drop table if exists {Tables};
            create table bench_work_streams (id uuid primary key, version bigint not null);
            create table bench_work_events (seq_id bigserial primary key, stream_id uuid not null references bench_work_streams (id),
                version bigint not null, type text not null, data jsonb not null, timestamp timestamptz not null, unique (stream_id, version));
            create table bench_work_documents (id uuid primary key, data jsonb not null);
            create table bench_work_snapshots (id uuid primary key, data jsonb not null);
            """))
        {
            await setup.ExecuteNonQueryAsync();
        }

        var conversations = Enumerable.Range(0, Clients).Select(_ => Guid.NewGuid()).ToArray();
        await using (var streams = dataSource.CreateCommand("insert into bench_work_streams (id, version) select unnest($1), 0"))
        {
            streams.Parameters.Add(new NpgsqlParameter { Value = conversations });
            await streams.ExecuteNonQueryAsync();
        }

        var counters = new int[Clients];
        var (rate, _) = await Load.RunAsync(Clients, WarmUp, Measure, async client =>
        {
            var conversation = conversations[client];
            var sequence = ++counters[client];
            var message = JsonSerializer.Serialize(new { conversation, sequence, role = "user", content = Payload(client, sequence), tokens = 60, createdAt = DateTimeOffset.UtcNow });
            var snapshot = JsonSerializer.Serialize(new { id = conversation, title = "bench", messageCount = sequence, tokens = 60L * sequence, lastActivityAt = DateTimeOffset.UtcNow });
            await using var batch = dataSource.CreateBatch();
            batch.BatchCommands.Add(Statement("update bench_work_streams set version = $2 where id = $1", conversation, (long)sequence));
            batch.BatchCommands.Add(Statement(
                "insert into bench_work_events (stream_id, version, type, data, timestamp) values ($1, $2, 'message_appended', $3::jsonb, now())",
                conversation, (long)sequence, message));
            batch.BatchCommands.Add(Statement("insert into bench_work_documents (id, data) values ($1, $2::jsonb)", Guid.CreateVersion7(), message));
            batch.BatchCommands.Add(Statement(
                "insert into bench_work_snapshots (id, data) values ($1, $2::jsonb) on conflict (id) do update set data = excluded.data", conversation, snapshot));
            await batch.ExecuteNonQueryAsync();
            return 1;
        });
        await using (var drop = dataSource.CreateCommand($"drop table {Tables}"))
        {
            await drop.ExecuteNonQueryAsync();
        }

        return rate;
    }

    private static NpgsqlBatchCommand Statement(string sql, params object[] values)
    {
        var command = new NpgsqlBatchCommand(sql);
        foreach (var value in values)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = value });
        }

        return command;
    }

    private async Task<(double, Latencies)> SingleAppendsAsync()
    {
        using var http = env.Client($"bench-append-{Guid.NewGuid():N}", Clients);
        var conversations = await CreateConversationsAsync(http, Clients);
        var counters = new int[Clients];
        long backlogBefore = 0;
        var measured = await Load.RunAsync(Clients, AppendWarmUp, Measure, async client =>
        {
            var i = counters[client]++;
            using var response = await http.PostAsJsonAsync($"/api/conversations/{conversations[client]}/messages",
                new { role = "user", content = Payload(client, i), externalId = $"m-{i}" });
            response.EnsureSuccessStatusCode();
            return 1;
        }, async () => backlogBefore = await AnalyzeThenReadBacklogAsync());

        // Whether the background work kept up with the appends while they were measured, or was left behind.
        results.Add("append_search_backlog_growth", await SearchBacklogAsync() - backlogBefore);
        return measured;
    }

    /// <summary>After a warm-up: statistics as a long-running database would have them, then the search backlog to measure from.</summary>
    private async Task<long> AnalyzeThenReadBacklogAsync()
    {
        await env.AnalyzeAsync();
        return await SearchBacklogAsync();
    }

    /// <summary>Appended messages that have no search entry yet.</summary>
    private async Task<long> SearchBacklogAsync()
    {
        await using var dataSource = NpgsqlDataSource.Create(env.PostgresConnectionString);
        await using var count = dataSource.CreateCommand("""
            select (select count(*) from modularchat.mt_events where type = 'message_appended')
                 - (select count(*) from modularchat.mc_search_entries where kind = 0)
            """);
        return (long)(await count.ExecuteScalarAsync())!;
    }

    private async Task<double> BatchAppendsAsync()
    {
        const int batchClients = 4, batchSize = 1000;
        using var http = env.Client($"bench-batch-{Guid.NewGuid():N}", batchClients);
        var conversations = await CreateConversationsAsync(http, batchClients);
        var counters = new int[batchClients];
        long backlogBefore = 0;
        var (rate, _) = await Load.RunAsync(batchClients, BatchWarmUp, Measure, async client =>
        {
            var first = counters[client];
            counters[client] += batchSize;
            var messages = Enumerable.Range(first, batchSize)
                .Select(i => new { role = i % 2 == 0 ? "user" : "assistant", content = Payload(client, i), externalId = $"b-{i}" });
            using var response = await http.PostAsJsonAsync($"/api/conversations/{conversations[client]}/messages/batch", new { messages });
            response.EnsureSuccessStatusCode();
            return batchSize;
        }, async () => backlogBefore = await AnalyzeThenReadBacklogAsync());

        // Whether the search indexing kept up with the batches while they were measured, or fell behind (and by how much).
        results.Add("batch_search_backlog_growth", await SearchBacklogAsync() - backlogBefore);

        // What the burst's speed costs: how long after it everything it appended is searchable. Waiting also leaves the
        // next scenario a host that is not still indexing this one's messages.
        var catchUp = Stopwatch.StartNew();
        while (await SearchBacklogAsync() > 0 && catchUp.Elapsed < CatchUpLimit)
        {
            await Task.Delay(TimeSpan.FromSeconds(1));
        }

        results.Add("batch_search_catch_up_seconds", catchUp.Elapsed.TotalSeconds);
        return rate;
    }

    public static async Task<Guid[]> CreateConversationsAsync(HttpClient http, int count)
    {
        var ids = new Guid[count];
        for (var i = 0; i < count; i++)
        {
            using var response = await http.PostAsJsonAsync("/api/conversations", new { title = $"bench {i}" });
            response.EnsureSuccessStatusCode();
            ids[i] = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetGuid();
        }

        return ids;
    }
}
