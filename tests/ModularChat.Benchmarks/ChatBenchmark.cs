using System.ClientModel;
using System.Net.Http.Json;
using Microsoft.Extensions.AI;
using ModularChat.Testing.Fakes;
using OpenAI;

namespace ModularChat.Benchmarks;

/// <summary>
/// What a chat turn through ModularChat costs beyond the model call itself. The model is the loopback fake (it answers
/// at once), so the difference is ModularChat's own work: authenticate, append the user message, read the context,
/// call the model, append the answer. Baseline: the same OpenAI client calling the same fake model directly, in the
/// same run.
/// </summary>
internal sealed class ChatBenchmark(BenchEnvironment env, Measurements results)
{
    public const int Clients = 4;

    public static readonly Dictionary<string, string> HostSettings = new()
    {
        ["OutboundNetwork__AllowPrivateNetworks"] = "true",
        ["Providers__MaxRetries"] = "0",
    };

    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan Measure = TimeSpan.FromSeconds(6);

    public async Task RunAsync()
    {
        await using var model = await FakeOpenAiServer.StartAsync();
        model.Responder = _ => FakeReply.Text("A short answer from the model, about as long as a chat reply tends to be.");
        while (model.Requests.TryDequeue(out _))
        {
        }

        Console.Error.WriteLine("[bench] chat: the model called directly (baseline)");
        var direct = new OpenAI.Chat.ChatClient("fake-model", new ApiKeyCredential("sk-bench"), new OpenAIClientOptions { Endpoint = model.BaseUrl }).AsIChatClient();
        var (directRate, directLatencies) = await Load.RunAsync(Clients, WarmUp, Measure, async _ =>
        {
            await direct.GetResponseAsync([new ChatMessage(ChatRole.User, "Where should we stay in Lisbon?")]);
            Drain(model);
            return 1;
        });

        Console.Error.WriteLine("[bench] chat: turns through ModularChat");
        using var http = env.Client("bench-chat-" + Guid.NewGuid().ToString("N")[..8], Clients);
        (await http.PostAsJsonAsync("/api/providers", new
        {
            name = "bench", kind = "openai-compatible", endpoint = model.BaseUrl.ToString(), chatModel = "fake-model", apiKey = "sk-bench-0123456789",
        })).EnsureSuccessStatusCode();
        var conversations = await AppendBenchmark.CreateConversationsAsync(http, Clients);
        var (rate, latencies) = await Load.RunAsync(Clients, WarmUp, Measure, async client =>
        {
            using var response = await http.PostAsJsonAsync($"/api/conversations/{conversations[client]}/chat", new { content = "Where should we stay in Lisbon?" });
            response.EnsureSuccessStatusCode();
            Drain(model);
            return 1;
        });

        results.Add("direct_model_call_per_second", directRate);
        results.Add("direct_model_call_p50_ms", directLatencies.Percentile(50));
        results.Add("chat_turn_per_second", rate);
        results.Add("chat_turn_p50_ms", latencies.Percentile(50));
        results.Add("chat_turn_p99_ms", latencies.Percentile(99));
        results.Add("chat_turn_vs_direct_model_ratio", rate / directRate);
        results.Add("chat_overhead_p50_ms", latencies.Percentile(50) - directLatencies.Percentile(50));
    }

    /// <summary>The fake records every request; the benchmark does not need them kept.</summary>
    private static void Drain(FakeOpenAiServer model)
    {
        while (model.Requests.Count > 100 && model.Requests.TryDequeue(out _))
        {
        }
    }
}
