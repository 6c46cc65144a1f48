using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ModularChat.Benchmarks;

/// <summary>
/// <c>./build.sh eval-search [folder]</c>: imports LoCoMo-format conversations through the REST API (one conversation
/// per file, external id = dia_id, speaker and session date as metadata, an image's caption as part of its message),
/// waits until they are indexed, then asks every question of categories 1-4 in its own conversation and prints
/// recall@1, @5 and @10 of the evidence turns for keyword-only, semantic-only and hybrid search.
/// </summary>
internal sealed class SearchEval(BenchEnvironment env, Measurements results)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private static readonly string[] Modes = ["keyword", "semantic", "hybrid"];
    private static readonly int[] Ks = [1, 5, 10];

    /// <summary>The default folder: ../shared/data/locomo next to the repository (a developer machine's layout).</summary>
    public static string DefaultFolder() => Path.GetFullPath(Path.Combine(BenchEnvironment.RepositoryRoot(), "..", "shared", "data", "locomo"));

    /// <summary>The conversation files of <paramref name="folder"/>, or null (with the reason printed) when there are none.</summary>
    public static string[]? Files(string folder)
    {
        if (!Directory.Exists(folder))
        {
            Console.Error.WriteLine($"eval-search: the LoCoMo folder '{folder}' does not exist.");
            Console.Error.WriteLine("Pass the folder that holds the LoCoMo conversation files (26.json, 30.json, ...): ./build.sh eval-search /path/to/locomo");
            return null;
        }

        var files = Directory.GetFiles(folder, "*.json").Order(StringComparer.Ordinal).ToArray();
        if (files.Length == 0)
        {
            Console.Error.WriteLine($"eval-search: '{folder}' holds no *.json LoCoMo conversation files.");
            return null;
        }

        return files;
    }

    public async Task RunAsync(string[] files)
    {
        using var http = env.Client($"eval-search-{Guid.NewGuid():N}", 8);
        var questions = new List<Question>();
        var turns = 0;
        foreach (var file in files)
        {
            var (conversationId, count, asked) = await ImportAsync(http, file);
            turns += count;
            questions.AddRange(asked.Select(q => q with { ConversationId = conversationId }));
            Console.Error.WriteLine($"[eval] imported {Path.GetFileName(file)}: {count} turns, {asked.Count} questions");
        }

        await WaitForIndexingAsync(http, turns);
        var recall = new ConcurrentDictionary<(string Mode, int K), double>();
        await Parallel.ForEachAsync(questions, new ParallelOptions { MaxDegreeOfParallelism = 4 }, async (question, ct) =>
        {
            foreach (var mode in Modes)
            {
                var url = $"/api/search?q={Uri.EscapeDataString(question.Text)}&conversationId={question.ConversationId}&scope=messages&k={Ks[^1]}&mode={mode}";
                using var response = await http.GetAsync(url, ct);
                response.EnsureSuccessStatusCode();
                var body = await response.Content.ReadFromJsonAsync<JsonElement>(ct);
                var found = body.GetProperty("hits").EnumerateArray()
                    .Select(h => h.GetProperty("externalId").GetString())
                    .ToList();
                foreach (var k in Ks)
                {
                    var top = found.Take(k).ToHashSet(StringComparer.Ordinal);
                    var share = question.Evidence.Count(top.Contains) / (double)question.Evidence.Count;
                    recall.AddOrUpdate((mode, k), share, (_, sum) => sum + share);
                }
            }
        });

        results.Add("search_eval_questions", questions.Count);
        foreach (var mode in Modes)
        {
            foreach (var k in Ks)
            {
                results.Add($"search_recall_at_{k}_{mode}", recall.GetValueOrDefault((mode, k)) / questions.Count);
            }
        }
    }

    private static async Task<(Guid ConversationId, int Turns, List<Question> Questions)> ImportAsync(HttpClient http, string file)
    {
        var sample = JsonNode.Parse(await File.ReadAllTextAsync(file))!.AsObject();
        var name = Path.GetFileNameWithoutExtension(file);
        var speakerA = sample["speaker_a"]?.GetValue<string>() ?? "A";
        var speakerB = sample["speaker_b"]?.GetValue<string>() ?? "B";
        using var created = await http.PostAsJsonAsync("/api/conversations",
            new { title = $"LoCoMo {name}: {speakerA} and {speakerB}", metadata = new Dictionary<string, string> { ["source"] = "locomo", ["sample"] = name } });
        created.EnsureSuccessStatusCode();
        var conversationId = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetGuid();

        var messages = new List<object>();
        for (var session = 1; sample.ContainsKey($"session_{session}_date_time"); session++)
        {
            if (sample[$"session_{session}"] is not JsonArray dialog)
            {
                continue;
            }

            var date = sample[$"session_{session}_date_time"]!.GetValue<string>();
            var at = ParseSessionDate(date);
            var index = 0;
            foreach (var turn in dialog.OfType<JsonObject>())
            {
                var speaker = turn["speaker"]?.GetValue<string>() ?? "";
                var text = turn["text"]?.GetValue<string>() ?? "";
                if (turn["blip_caption"]?.GetValue<string>() is { Length: > 0 } caption)
                {
                    text = $"{text} [shares {caption}]";
                }

                messages.Add(new
                {
                    role = speaker == speakerA ? "user" : "assistant",
                    content = string.IsNullOrWhiteSpace(text) ? "…" : text,
                    externalId = turn["dia_id"]!.GetValue<string>(),
                    createdAt = at?.AddSeconds(index++),
                    metadata = new Dictionary<string, string> { ["speaker"] = speaker, ["session"] = session.ToString(CultureInfo.InvariantCulture), ["session_date"] = date },
                });
            }
        }

        foreach (var batch in messages.Chunk(500))
        {
            using var response = await http.PostAsJsonAsync($"/api/conversations/{conversationId}/messages/batch", new { messages = batch });
            if (!response.IsSuccessStatusCode)
            {
                throw new InvalidOperationException($"Importing {file} failed: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            }
        }

        var questions = new List<Question>();
        foreach (var qa in (sample["qa"] as JsonArray ?? []).OfType<JsonObject>())
        {
            var category = qa["category"]?.GetValue<int>() ?? 0;
            var evidence = (qa["evidence"] as JsonArray ?? []).Select(e => e?.GetValue<string>()).OfType<string>().ToList();
            if (category is >= 1 and <= 4 && evidence.Count > 0 && qa["question"]?.GetValue<string>() is { Length: > 0 } text)
            {
                questions.Add(new Question(Guid.Empty, text, evidence));
            }
        }

        return (conversationId, messages.Count, questions);
    }

    /// <summary>"1:56 pm on 8 May, 2023" (the LoCoMo session format); null when it does not parse.</summary>
    private static DateTimeOffset? ParseSessionDate(string value)
        => DateTimeOffset.TryParseExact(value.Replace("  ", " ", StringComparison.Ordinal), ["h:mm tt 'on' d MMMM, yyyy", "h:mm tt 'on' d MMM, yyyy"],
            CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AllowWhiteSpaces, out var at) ? at : null;

    private static async Task WaitForIndexingAsync(HttpClient http, int turns)
    {
        var deadline = DateTime.UtcNow.AddMinutes(10);
        while (true)
        {
            var status = await http.GetFromJsonAsync<JsonElement>("/api/search/status", Json);
            var entries = status.GetProperty("entries").GetInt64();
            var embedded = status.GetProperty("embedded").GetInt64();
            if (entries >= turns && embedded >= turns)
            {
                Console.Error.WriteLine($"[eval] indexed {entries} entries ({embedded} embedded with {status.GetProperty("model").GetString()})");
                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Indexing did not finish: {entries} of {turns} entries, {embedded} embedded.");
            }

            await Task.Delay(500);
        }
    }

    private sealed record Question(Guid ConversationId, string Text, List<string> Evidence);
}
