using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Xunit.Abstractions;
using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>
/// Retrieval quality on a real long conversation (LoCoMo sample 30, see Data/locomo/README.md): every question of
/// categories 1-4 searched in its conversation, recall@10 of its evidence turns, as <c>./build.sh eval-search</c> measures it.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class SearchQualityTests(SearchApp app, ITestOutputHelper output)
{
    [Fact]
    public async Task Hybrid_search_finds_the_evidence_of_questions_about_a_long_conversation()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var sample = JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(AppContext.BaseDirectory, "Data", "locomo", "30.json")))!.AsObject();
        var speakerA = sample["speaker_a"]!.GetValue<string>();
        var messages = new List<object>();
        for (var session = 1; sample.ContainsKey($"session_{session}_date_time"); session++)
        {
            var date = sample[$"session_{session}_date_time"]!.GetValue<string>();
            foreach (var turn in (sample[$"session_{session}"] as JsonArray ?? []).OfType<JsonObject>())
            {
                var speaker = turn["speaker"]!.GetValue<string>();
                var text = turn["text"]!.GetValue<string>();
                if (turn["blip_caption"]?.GetValue<string>() is { Length: > 0 } caption)
                {
                    text += $" [shares {caption}]";
                }

                messages.Add(Message(text, speaker == speakerA ? "user" : "assistant", turn["dia_id"]!.GetValue<string>(),
                    new Dictionary<string, string> { ["speaker"] = speaker, ["session"] = session.ToString(CultureInfo.InvariantCulture), ["session_date"] = date }));
            }
        }

        var id = await client.StartConversation("locomo 30", [.. messages]);
        await client.WaitForIndexing(messages.Count);

        var questions = (sample["qa"] as JsonArray ?? []).OfType<JsonObject>()
            .Where(q => q["category"]!.GetValue<int>() is >= 1 and <= 4 && (q["evidence"] as JsonArray)?.Count > 0)
            .Select(q => (Text: q["question"]!.GetValue<string>(), Evidence: q["evidence"]!.AsArray().Select(e => e!.GetValue<string>()).ToList()))
            .ToList();
        var recall = new Dictionary<string, double>();
        foreach (var mode in new[] { "keyword", "semantic", "hybrid" })
        {
            var sum = 0.0;
            foreach (var (text, evidence) in questions)
            {
                var hits = (await (await client.GetAsync($"/api/search?q={Uri.EscapeDataString(text)}&conversationId={id}&scope=messages&k=10&mode={mode}"))
                    .ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
                var found = hits.Select(h => h.ExternalId).ToHashSet();
                sum += evidence.Count(found.Contains) / (double)evidence.Count;
            }

            recall[mode] = sum / questions.Count;
            output.WriteLine($"{mode}: recall@10 = {recall[mode]:F3} over {questions.Count} questions");
        }

        // Plain BM25 over single turns is about 0.58 on LoCoMo; the hybrid default must do clearly better.
        Assert.True(recall["hybrid"] >= 0.65, $"hybrid recall@10 {recall["hybrid"]:F3}");
        Assert.True(recall["semantic"] >= 0.5, $"semantic recall@10 {recall["semantic"]:F3}");
    }
}
