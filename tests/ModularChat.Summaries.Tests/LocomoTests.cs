using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Summarizers;
using Xunit.Abstractions;

namespace ModularChat.Summaries.Tests;

/// <summary>
/// End to end on a real long conversation (LoCoMo conversation 30, see TestData/README.md): import it message by message,
/// let the milestones fire, and check that the extractive summary mentions the facts of the human-written session events.
/// </summary>
[Collection(AppCollection.Name)]
public sealed partial class LocomoTests(SummariesApp app, ITestOutputHelper output)
{
    private static readonly HashSet<string> Ignored = new(StringComparer.Ordinal)
    {
        "about", "after", "again", "also", "because", "before", "being", "from", "have", "into", "just", "more", "other", "over", "some",
        "that", "their", "them", "then", "they", "this", "were", "what", "when", "with", "your", "talks", "tells", "shares", "asks",
        "says", "mentions", "discusses", "decides", "plans", "wants", "gets", "goes", "makes", "takes", "starts", "begins",
    };

    [Fact]
    public async Task A_long_real_conversation_gets_a_summary_that_mentions_its_events()
    {
        var conversation = Locomo.Load(Path.Combine(AppContext.BaseDirectory, "TestData", "locomo-30.json"));
        using var client = app.Client(ModularChatApp.NewUser("locomo"));
        var id = await client.NewConversation("Jon and Gina");

        // Message by message; at each milestone the import waits for its summary, as a conversation held over months would.
        long sequence = 0;
        foreach (var t in conversation.Turns)
        {
            await client.AppendEach(id, [new
            {
                role = t.Speaker == conversation.SpeakerA ? "user" : "assistant",
                content = t.Text,
                externalId = t.DiaId,
                metadata = new Dictionary<string, string> { ["speaker"] = t.Speaker },
                createdAt = t.At,
            }]);
            if (++sequence is 10 or 25 or 50 or 100 or 200)
            {
                await client.SummaryCovering(id, sequence);
            }
        }

        (await client.PostAsync($"/api/conversations/{id}/summary", null)).EnsureSuccessStatusCode();
        var summary = await client.SummaryCovering(id, conversation.Turns.Count, seconds: 90);
        output.WriteLine(summary.Text);

        // The milestones fired as the conversation grew, each revision folding the new messages into the previous one.
        var history = await client.History(id);
        Assert.Contains(history, h => h.Reason == "milestone:10");
        Assert.Contains(history, h => h.Reason == "milestone:200");
        Assert.All(history, h => Assert.Equal(1, h.FromSequence));
        Assert.Equal(history.Select(h => h.ToSequence).OrderDescending(), history.Select(h => h.ToSequence));

        // Speakers and dates are kept.
        Assert.Contains("] Jon: ", summary.Text, StringComparison.Ordinal);
        Assert.Contains("] Gina: ", summary.Text, StringComparison.Ordinal);
        Assert.Contains("[2023-01-20]", summary.Text, StringComparison.Ordinal);
        Assert.InRange(summary.TokenCount, 100, 600);

        var mentioned = AssertMentionsItsEvents(conversation, summary.Text, "the summary");
        output.WriteLine($"{mentioned.Count} of {conversation.Events.Count} events mentioned: " + string.Join(" | ", mentioned.Select(e => $"{e.Session}: {e.Text}")));
    }

    /// <summary>
    /// The summary a conversation ends with must not depend on when its jobs happened to run: a token-threshold job fires
    /// wherever the conversation stands when the threshold is crossed, leaving a last chunk of any size (a run in CI once
    /// ended on a chunk of a few messages that took a third of the budget and pushed earlier facts out).
    /// </summary>
    [Fact]
    public async Task The_facts_kept_do_not_depend_on_where_the_merges_were_cut()
    {
        var conversation = Locomo.Load(Path.Combine(AppContext.BaseDirectory, "TestData", "locomo-30.json"));
        var tokens = new O200kTokenCounter();
        using var summarizer = new ExtractiveSummarizer(tokens, parallelism: 1);
        var settings = new SummarySettings("default", new StrategySettings([10, 25, 50, 100, 200], 300, 4000, TimeSpan.Zero),
            SummariesOptions.ExtractiveSummarizer, false, MaxSummaryTokens: 600, ChunkSize: 200, ExtractiveSummarizer.Algorithm, "", ExtractiveSummarizer.AlgorithmVersion);
        var messages = conversation.Turns.Select((t, i) => new ConversationMessage(Guid.Empty, Guid.NewGuid(), i + 1,
            t.Speaker == conversation.SpeakerA ? MessageRole.User : MessageRole.Assistant, t.Text, t.DiaId,
            new Dictionary<string, string> { ["speaker"] = t.Speaker }, t.At, t.At, tokens.Count(t.Text))).ToList();

        // The milestones, a token-threshold job anywhere after the 100th message (none before: too few tokens) or none, the end.
        int?[] cuts = [null, .. Enumerable.Range(21, 53).Where(i => i != 40).Select(i => (int?)(i * 5)), messages.Count - 1];
        foreach (var cut in cuts)
        {
            int[] points = [.. new[] { 10, 25, 50, 100, 200, cut ?? 0, messages.Count }.Where(p => p > 0).Order()];
            string? text = null;
            var covered = 0;
            foreach (var point in points)
            {
                for (var from = covered; from < point; from += settings.ChunkSize)
                {
                    var chunk = messages[from..Math.Min(point, from + settings.ChunkSize)];
                    text = (await summarizer.MergeAsync(new SummaryMergeInput(text, from, chunk, settings), CancellationToken.None)).Text;
                }

                covered = point;
            }

            Assert.InRange(tokens.Count(text!), 100, settings.MaxSummaryTokens);
            AssertMentionsItsEvents(conversation, text!, cut is null ? "the summary with no job between the last milestone and the end" : $"the summary with a job after message {cut}");
        }
    }

    /// <summary>The facts: an event is mentioned when most of its distinctive words are in the summary.</summary>
    private static List<SessionEvent> AssertMentionsItsEvents(Locomo conversation, string summary, string what)
    {
        var words = Words(summary);
        var mentioned = conversation.Events.Where(e => Mentioned(e.Text, words, conversation)).ToList();
        Assert.True(mentioned.Count >= conversation.Events.Count / 4, $"{what} mentions only {mentioned.Count} of {conversation.Events.Count} events");
        Assert.True(mentioned.Any(e => e.Session <= 5) && mentioned.Any(e => e.Session >= 15), $"{what} should mention events of the first and the last sessions");
        Assert.True(mentioned.Select(e => e.Session).Distinct().Count() >= 6, $"{what}: the mentioned events should span the conversation");
        return mentioned;
    }

    private static bool Mentioned(string eventText, HashSet<string> summaryWords, Locomo conversation)
    {
        var key = Words(eventText).Where(w => w.Length >= 4 && !Ignored.Contains(w) && w != conversation.SpeakerA.ToLowerInvariant()
            && w != conversation.SpeakerB.ToLowerInvariant()).ToList();
        return key.Count > 0 && key.Count(summaryWords.Contains) * 2 >= key.Count;
    }

    /// <summary>Lower-case words, with a plural or verb "s" dropped so "loses" and "lost"... at least "dances" and "dance" match.</summary>
    private static HashSet<string> Words(string text)
        => WordPattern().Matches(text.ToLowerInvariant()).Select(m => m.Value.Length > 4 && m.Value.EndsWith('s') ? m.Value[..^1] : m.Value).ToHashSet();

    [GeneratedRegex(@"[a-z][a-z']+")]
    private static partial Regex WordPattern();

    private sealed record Turn(string Speaker, string DiaId, string Text, DateTimeOffset At);

    private sealed record SessionEvent(int Session, string Text);

    private sealed record Locomo(string SpeakerA, string SpeakerB, List<Turn> Turns, List<SessionEvent> Events)
    {
        public static Locomo Load(string path)
        {
            using var document = JsonDocument.Parse(File.ReadAllText(path));
            var root = document.RootElement;
            var a = root.GetProperty("speaker_a").GetString()!;
            var b = root.GetProperty("speaker_b").GetString()!;
            var turns = new List<Turn>();
            var events = new List<SessionEvent>();
            for (var n = 1; root.TryGetProperty($"session_{n}", out var session); n++)
            {
                var at = DateTimeOffset.ParseExact(root.GetProperty($"session_{n}_date_time").GetString()!, "h:mm tt 'on' d MMMM, yyyy",
                    CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
                var i = 0;
                foreach (var turn in session.EnumerateArray())
                {
                    // A shared image is part of the message: its caption says what it shows.
                    var text = turn.GetProperty("text").GetString()!;
                    if (turn.TryGetProperty("blip_caption", out var caption))
                    {
                        text += $" [shares {caption.GetString()}]";
                    }

                    turns.Add(new Turn(turn.GetProperty("speaker").GetString()!, turn.GetProperty("dia_id").GetString()!, text, at.AddMinutes(i++)));
                }

                if (root.TryGetProperty($"events_session_{n}", out var sessionEvents))
                {
                    foreach (var speaker in new[] { a, b })
                    {
                        if (sessionEvents.TryGetProperty(speaker, out var list))
                        {
                            events.AddRange(list.EnumerateArray().Select(e => new SessionEvent(n, e.GetString()!)));
                        }
                    }
                }
            }

            return new Locomo(a, b, turns, events);
        }
    }
}
