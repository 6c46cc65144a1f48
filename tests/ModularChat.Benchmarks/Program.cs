using ModularChat.Benchmarks;

// ./build.sh bench [scenario...]: prints progress on stderr and, at the end, one name=value line per figure on stdout.
// ./build.sh eval-search [folder]: search quality on LoCoMo-format conversations (see SearchEval).
// One run at a time: a run recreates the benchmark's databases, so a second one would drop them under the first one's
// host, and the figures of two runs sharing the two cores would mean nothing anyway.
using var runLock = BenchEnvironment.TryLockRun();
if (runLock is null)
{
    Console.Error.WriteLine("[bench] another benchmark is running from this repository (it holds .local/bench.lock): wait for it to end");
    return 2;
}

var results = new Measurements();
if (args is ["eval-search", ..])
{
    var files = SearchEval.Files(args.Length > 1 ? Path.GetFullPath(args[1]) : SearchEval.DefaultFolder());
    if (files is null)
    {
        return 2;
    }

    await using var evalEnv = BenchEnvironment.FromEnvironment();
    await evalEnv.StartAsync();
    await new SearchEval(evalEnv, results).RunAsync(files);
    await evalEnv.StopHostAsync();
    results.Print();
    return 0;
}

var scenarios = args.Length == 0 ? ["append", "chat", "search", "summaries", "context", "tokens"] : args;
await using var env = BenchEnvironment.FromEnvironment();
if (!scenarios.All(s => s == "tokens"))
{
    // The chat scenario's model runs on loopback, which a host only connects to when told so: it then starts its own host.
    await env.StartAsync(scenarios.Contains("chat") ? ChatBenchmark.HostSettings : null);
}

foreach (var scenario in scenarios)
{
    switch (scenario)
    {
        case "append":
            await new AppendBenchmark(env, results).RunAsync();
            break;
        case "chat":
            await new ChatBenchmark(env, results).RunAsync();
            break;
        case "search":
            await new SearchBenchmark(env, results).RunAsync();
            break;
        case "summaries":
            await new SummaryBenchmark(results).RunAsync();
            break;
        case "context":
            await new ContextBenchmark(results).RunAsync();
            break;
        case "tokens":
            await new TokenBenchmark(results).RunAsync();
            break;
        case "http-floor":
            // The cost of the HTTP round trip alone (anonymous liveness probe): the ceiling any endpoint can reach here.
            using (var http = env.Client("bench-floor", AppendBenchmark.Clients))
            {
                var (rate, latencies) = await Load.RunAsync(AppendBenchmark.Clients, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(8), async _ =>
                {
                    using var response = await http.GetAsync("/health/live");
                    response.EnsureSuccessStatusCode();
                    return 1;
                });
                results.Add("http_floor_per_second", rate);
                results.Add("http_floor_p50_ms", latencies.Percentile(50));
            }

            break;
        case "read-floor":
            using (var http = env.Client("bench-read", AppendBenchmark.Clients))
            {
                var ids = await AppendBenchmark.CreateConversationsAsync(http, AppendBenchmark.Clients);
                var (rate, latencies) = await Load.RunAsync(AppendBenchmark.Clients, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(8), async c =>
                {
                    using var response = await http.GetAsync($"/api/conversations/{ids[c]}");
                    response.EnsureSuccessStatusCode();
                    return 1;
                });
                results.Add("get_conversation_per_second", rate);
                results.Add("get_conversation_p50_ms", latencies.Percentile(50));
            }

            break;
        default:
            Console.Error.WriteLine($"unknown scenario '{scenario}' (known: append, chat, search, summaries, context, tokens, http-floor, read-floor)");
            return 2;
    }
}

await env.StopHostAsync();
results.Print();
return 0;
