using System.Text.RegularExpressions;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Summarizers;

namespace ModularChat.Summaries.Tests.Unit;

public sealed partial class ExtractiveSummarizerTests
{
    private static readonly O200kTokenCounter Tokens = new();
    private static readonly ExtractiveSummarizer Summarizer = new(Tokens);

    private static SummarySettings Settings(int maxTokens = 200)
        => new("default", new StrategySettings([10], 500, 4000, TimeSpan.Zero), "extractive", false, maxTokens, 200, "m", "prompt", "v1");

    private static ConversationMessage Message(long sequence, string speaker, string content, MessageRole role = MessageRole.User, int day = 1)
        => new(Guid.Empty, Guid.NewGuid(), sequence, role, content, null, new Dictionary<string, string> { ["speaker"] = speaker },
            new DateTimeOffset(2024, 5, day, 10, 0, 0, TimeSpan.Zero), DateTimeOffset.UtcNow, Tokens.Count(content));

    private static readonly ConversationMessage[] Trip =
    [
        Message(1, "Anna", "Hi Ben! How are you doing today?"),
        Message(2, "Ben", "Hey! I'm good, thanks. I finally booked the flights to Lisbon for the twelfth of June."),
        Message(3, "Anna", "Great news! Did you pick the hotel near the river or the guesthouse in Alfama?"),
        Message(4, "Ben", "I chose the guesthouse in Alfama because it is close to the restaurants we liked."),
        Message(5, "Anna", "Perfect. My sister Clara will join us on the fourteenth and stay for three nights."),
        Message(6, "Ben", "Cool."),
        Message(7, "Anna", "I also reserved a table at Taberna da Rua das Flores for Saturday evening at eight."),
        Message(8, "Ben", "Thanks!"),
    ];

    private static async Task<string> Summarize(IReadOnlyList<ConversationMessage> messages, string? previous = null, long previousCovered = 0, int maxTokens = 200)
        => (await Summarizer.MergeAsync(new SummaryMergeInput(previous, previousCovered, messages, Settings(maxTokens)), CancellationToken.None)).Text;

    [Fact]
    public async Task The_same_conversation_always_gives_the_same_summary()
        => Assert.Equal(await Summarize(Trip), await Summarize(Trip));

    [Fact]
    public async Task Each_line_keeps_its_speaker_and_date()
    {
        var summary = await Summarize(Trip);

        var lines = summary.Split('\n');
        Assert.NotEmpty(lines);
        Assert.All(lines, l => Assert.Matches(SummaryLine(), l));
        Assert.Contains("- [2024-05-01] Ben: ", summary, StringComparison.Ordinal);
        Assert.Contains("Lisbon", summary, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Small_talk_gives_way_to_facts()
    {
        var summary = await Summarize(Trip, maxTokens: 120);

        Assert.DoesNotContain("Cool.", summary, StringComparison.Ordinal);
        Assert.DoesNotContain("Thanks!", summary, StringComparison.Ordinal);
        Assert.DoesNotContain("How are you", summary, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_summary_stays_within_the_token_budget_and_keeps_whole_sentences()
    {
        var many = Enumerable.Range(1, 120).Select(i => Message(i, i % 2 == 0 ? "Ben" : "Anna",
            $"On day {i} we visited museum number {i} in district {i % 7} and paid {i * 3} euros for the tickets with the {(i % 5 == 0 ? "student" : "family")} discount.")).ToList();

        var summary = await Summarize(many, maxTokens: 150);

        Assert.InRange(Tokens.Count(summary), 1, 150);
        Assert.All(summary.Split('\n'), l => Assert.EndsWith(".", l, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("one-word")]
    [InlineData("words")]
    [InlineData("log")]
    public async Task A_message_that_is_one_sentence_longer_than_the_budget_is_cut_to_fit_rather_than_dropped(string kind)
    {
        var content = kind switch
        {
            "one-word" => new string('a', 5_000),
            "words" => string.Concat(Enumerable.Repeat("text ", 3_000)),
            _ => string.Concat(Enumerable.Range(1, 120).Select(i => $"2024-05-01T10:{i % 60:00}:00Z worker-{i % 4} INFO job {i} done in {i * 7} ms; ")),
        };

        var summary = await Summarize([Message(1, "Anna", content)], maxTokens: 200);

        Assert.InRange(Tokens.Count(summary), 1, 200);
        Assert.StartsWith("- [2024-05-01] Anna: " + content[..10], summary, StringComparison.Ordinal);
        Assert.EndsWith("…", summary, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_chunk_of_only_instructions_and_tool_output_still_gets_a_summary()
    {
        var messages = new[]
        {
            Message(1, "system", "You are a helpful travel assistant that always answers in French.", MessageRole.System),
            Message(2, "tool", "Search results: train Alfa Pendular departs Lisbon Oriente at 08:39.", MessageRole.Tool),
        };

        Assert.Contains("08:39", await Summarize(messages), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Repeated_statements_appear_once()
    {
        var repetitive = new[]
        {
            Message(1, "Anna", "The meeting with the landlord is on Tuesday at the flat in Porto."),
            Message(2, "Ben", "The meeting with the landlord is on Tuesday at the flat in Porto."),
            Message(3, "Anna", "Remember, the meeting with the landlord is on Tuesday at the flat in Porto."),
            Message(4, "Ben", "I will bring the signed contract and the deposit of two thousand euros."),
        };

        var summary = await Summarize(repetitive);

        Assert.Equal(1, Regex.Count(summary, "landlord"));
        Assert.Contains("deposit", summary, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Instructions_and_tool_output_are_not_summarized()
    {
        var messages = new[]
        {
            Message(1, "system", "You are a helpful travel assistant that always answers in French and never mentions prices.", MessageRole.System),
            Message(2, "Anna", "Please find a train from Lisbon to Porto on the third of May in the morning."),
            Message(3, "tool", "Search results: train Alfa Pendular departs Lisbon Oriente at 08:39, arrives Porto Campanha 11:27.", MessageRole.Tool),
            Message(4, "Assistant", "The Alfa Pendular train leaves Lisbon Oriente at 08:39 and arrives in Porto at 11:27.", MessageRole.Assistant),
        };

        var summary = await Summarize(messages);

        Assert.DoesNotContain("French", summary, StringComparison.Ordinal);
        Assert.DoesNotContain("Search results", summary, StringComparison.Ordinal);
        Assert.Contains("08:39", summary, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_later_chunk_is_folded_into_the_previous_summary_keeping_earlier_facts()
    {
        var first = await Summarize(Trip, maxTokens: 160);
        var later = new[]
        {
            Message(9, "Ben", "The airline moved our flight to Lisbon from the twelfth to the thirteenth of June.", day: 20),
            Message(10, "Anna", "Then I will ask the guesthouse in Alfama to shift the booking by one night.", day: 20),
            Message(11, "Ben", "Clara says she can still arrive on the fourteenth as planned.", day: 20),
        };

        var merged = await Summarize(later, previous: first, previousCovered: Trip.Length, maxTokens: 160);

        Assert.Contains("[2024-05-20]", merged, StringComparison.Ordinal);
        Assert.Contains("thirteenth", merged, StringComparison.Ordinal);
        Assert.Contains("[2024-05-01]", merged, StringComparison.Ordinal);
        // Earlier lines come first and unchanged: the previous summary is folded in, not rewritten.
        var earlier = merged.Split('\n').TakeWhile(l => l.Contains("[2024-05-01]", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(earlier);
        Assert.All(earlier, l => Assert.Contains(l, first.Split('\n')));
        Assert.InRange(Tokens.Count(merged), 1, 160);
    }

    [Fact]
    public async Task A_summary_another_summarizer_wrote_is_kept_as_sentences()
    {
        const string prose = "Anna and Ben planned a trip to Lisbon in June. They booked a guesthouse in Alfama.";
        var merged = await Summarize([Message(9, "Ben", "We also bought tickets for the tram museum on the fifteenth of June.")], prose, 8);

        Assert.Contains("- Anna and Ben planned a trip to Lisbon in June.", merged, StringComparison.Ordinal);
        Assert.Contains("tram museum", merged, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_chunk_of_only_small_talk_still_says_what_happened()
    {
        var summary = await Summarize([Message(1, "Anna", "Hi!"), Message(2, "Ben", "Hey")]);
        Assert.Contains("Anna: Hi!", summary, StringComparison.Ordinal);
    }

    [GeneratedRegex(@"^- \[\d{4}-\d{2}-\d{2}\] (Anna|Ben): .+$")]
    private static partial Regex SummaryLine();
}
