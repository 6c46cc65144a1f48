using System.Diagnostics;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace ModularChat.Benchmarks;

/// <summary>
/// Search latency for a tenant holding 50,000 messages (100 conversations of 500 turns of synthetic chat text with a
/// realistic spread of common and rare words): one client asks hybrid (k=10) and keyword-only searches, the keyword
/// figures being the baseline of the same run.
/// </summary>
internal sealed class SearchBenchmark(BenchEnvironment env, Measurements results)
{
    private static readonly int Messages = int.TryParse(Environment.GetEnvironmentVariable("BENCH_SEARCH_MESSAGES"), out var m) ? m : 50_000;
    // More conversations (BENCH_SEARCH_CONVERSATIONS) for the same messages: what a tenant's count of conversations costs a search.
    private static readonly int Conversations = int.TryParse(Environment.GetEnvironmentVariable("BENCH_SEARCH_CONVERSATIONS"), out var c) ? c : 100;
    private static readonly int Queries = int.TryParse(Environment.GetEnvironmentVariable("BENCH_SEARCH_QUERIES"), out var q) ? q : 300;
    private const int WarmUpQueries = 40;

    // Everyday words of chat (they occur in many messages) and topic words (each in few).
    private static readonly string[] Common =
    """
    good great time really think know going today week weekend work family friends kids trip home new love fun feel thanks sounds
    yesterday tomorrow plans night morning school house dog cat food dinner lunch coffee movie book music game team city park beach
    summer winter holiday birthday party photo picture car drive walk run class project job meeting doctor garden kitchen weather
    rain sun travel visit call message idea story problem help start finish hope happy tired busy excited nice awesome amazing
    """.Split((char[])[' ', '\n', '\r'], StringSplitOptions.RemoveEmptyEntries);

    private static readonly string[] Syllables = ["ka", "lo", "mi", "ra", "ten", "sor", "vel", "qui", "dan", "por", "lix", "ben", "tu", "gar", "nel", "shi", "om", "ar", "zel", "fi"];

    public async Task RunAsync()
    {
        var random = new Random(42);
        var topics = Enumerable.Range(0, 3000).Select(_ => Word(random)).Distinct().ToArray();
        using var http = env.Client($"bench-search-{Guid.NewGuid():N}", 8);
        var started = Stopwatch.GetTimestamp();
        var texts = await ImportAsync(http, random, topics);
        Console.Error.WriteLine($"[bench] imported {Messages} messages in {Stopwatch.GetElapsedTime(started).TotalSeconds:F0} s");
        await WaitForIndexingAsync(http, Messages);
        Console.Error.WriteLine($"[bench] indexed and embedded {Messages} messages after {Stopwatch.GetElapsedTime(started).TotalSeconds:F0} s");

        // Searches are measured on current statistics, as autovacuum keeps them: until the first ANALYZE after the
        // import, PostgreSQL takes the benchmark's tenant for a handful of rows and reads all of its entries per query.
        await env.AnalyzeAsync();

        // Queries: a few words of a random message (so they match something) plus an everyday word, as users type them.
        var queries = Enumerable.Range(0, Queries + WarmUpQueries).Select(_ =>
        {
            var words = texts[random.Next(texts.Count)].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var picked = Enumerable.Range(0, random.Next(2, 5)).Select(_ => words[random.Next(words.Length)].Trim('.', ',', '?', '!'));
            return string.Join(' ', picked.Append(Common[random.Next(Common.Length)]));
        }).ToArray();

        // The modes take turns on every query (in rotating order), so none gets colder caches or a busier machine than another.
        var latencies = await MeasureAsync(http, queries, ["hybrid", "keyword", "semantic"]);
        var (hybrid, keyword, semantic) = (latencies["hybrid"], latencies["keyword"], latencies["semantic"]);
        results.Add("search_messages", Messages);
        results.Add("search_conversations", Conversations);
        results.Add("search_hybrid_p50_ms", hybrid.Percentile(50));
        results.Add("search_hybrid_p95_ms", hybrid.Percentile(95));
        results.Add("search_keyword_p50_ms", keyword.Percentile(50));
        results.Add("search_keyword_p95_ms", keyword.Percentile(95));
        results.Add("search_semantic_p50_ms", semantic.Percentile(50));
        results.Add("search_semantic_p95_ms", semantic.Percentile(95));
        results.Add("search_hybrid_vs_keyword_p50_ratio", hybrid.Percentile(50) / keyword.Percentile(50));
        results.Add("search_hybrid_vs_keyword_p95_ratio", hybrid.Percentile(95) / keyword.Percentile(95));
    }

    private static async Task<Dictionary<string, Latencies>> MeasureAsync(HttpClient http, string[] queries, string[] modes)
    {
        var latencies = modes.ToDictionary(m => m, _ => new Latencies());
        for (var i = 0; i < queries.Length; i++)
        {
            for (var m = 0; m < modes.Length; m++)
            {
                var mode = modes[(i + m) % modes.Length];
                var started = Stopwatch.GetTimestamp();
                using var response = await http.GetAsync($"/api/search?q={Uri.EscapeDataString(queries[i])}&k=10&mode={mode}");
                response.EnsureSuccessStatusCode();
                await response.Content.ReadAsByteArrayAsync();
                if (i >= WarmUpQueries)
                {
                    latencies[mode].Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                }
            }
        }

        return latencies;
    }

    private static async Task<List<string>> ImportAsync(HttpClient http, Random random, string[] topics)
    {
        if (Conversations < 1 || Messages < Conversations)
        {
            throw new ArgumentException($"BENCH_SEARCH_CONVERSATIONS ({Conversations}) must be between 1 and BENCH_SEARCH_MESSAGES ({Messages}).");
        }

        var perConversation = Messages / Conversations;
        var texts = new List<string>(Messages);
        var start = DateTimeOffset.UtcNow.AddDays(-365);
        // Within the last year whatever the count (5000 minutes apart at the default 100).
        var apart = Math.Min(5000, 500_000 / Conversations);
        var conversations = new List<List<object>>(Conversations);
        for (var c = 0; c < Conversations; c++)
        {
            // Each conversation dwells on a handful of topics, as real ones do.
            var own = Enumerable.Range(0, 20).Select(_ => topics[random.Next(topics.Length)]).ToArray();
            var messages = new List<object>(perConversation);
            for (var i = 0; i < perConversation; i++)
            {
                var text = Sentence(random, own, topics);
                texts.Add(text);
                messages.Add(new
                {
                    role = i % 2 == 0 ? "user" : "assistant",
                    content = text,
                    createdAt = start.AddMinutes(c * apart + i * 7),
                    metadata = new Dictionary<string, string> { ["speaker"] = i % 2 == 0 ? "Sam" : "Alex" },
                });
            }

            conversations.Add(messages);
        }

        // Made up in order above (the same texts on every run), sent by 8 clients at once: thousands of conversations one
        // request at a time took minutes.
        await Parallel.ForEachAsync(conversations, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (messages, cancellationToken) =>
        {
            var id = (await AppendBenchmark.CreateConversationsAsync(http, 1))[0];
            foreach (var batch in messages.Chunk(500))
            {
                using var response = await http.PostAsJsonAsync($"/api/conversations/{id}/messages/batch", new { messages = batch }, cancellationToken);
                response.EnsureSuccessStatusCode();
            }
        });

        return texts;
    }

    private static string Sentence(Random random, string[] own, string[] topics)
    {
        var builder = new StringBuilder();
        var length = random.Next(8, 26);
        for (var w = 0; w < length; w++)
        {
            var roll = random.NextDouble();
            // Zipf-like choice among everyday words; some topic words of the conversation; a rare word now and then.
            var word = roll < 0.7 ? Common[(int)(Common.Length * Math.Pow(random.NextDouble(), 2))]
                : roll < 0.95 ? own[random.Next(own.Length)]
                : topics[random.Next(topics.Length)];
            builder.Append(word).Append(w == length - 1 ? '.' : ' ');
        }

        return builder.ToString();
    }

    private static string Word(Random random)
    {
        var builder = new StringBuilder();
        for (var s = random.Next(2, 4); s > 0; s--)
        {
            builder.Append(Syllables[random.Next(Syllables.Length)]);
        }

        return builder.ToString();
    }

    private static async Task WaitForIndexingAsync(HttpClient http, int messages)
    {
        var deadline = DateTime.UtcNow.AddMinutes(15);
        while (true)
        {
            var status = await http.GetFromJsonAsync<JsonElement>("/api/search/status");
            var entries = status.GetProperty("entries").GetInt64();
            var embedded = status.GetProperty("embedded").GetInt64();
            if (entries >= messages && embedded >= messages)
            {
                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Indexing did not finish: {entries} of {messages} entries, {embedded} embedded.");
            }

            await Task.Delay(1000);
        }
    }
}
