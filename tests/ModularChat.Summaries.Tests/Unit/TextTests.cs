using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Summaries.Summarizers;

namespace ModularChat.Summaries.Tests.Unit;

public sealed class TextTests
{
    private static readonly O200kTokenCounter Tokens = new();

    [Fact]
    public void Sentences_split_at_terminal_punctuation_but_not_after_abbreviations_or_initials()
        => Assert.Equal(
            ["Dr. Smith met J. Doe at 10.30 in St. Mary's.", "Was it fun?", "Yes!", "Next line"],
            Text.Sentences("Dr. Smith met J. Doe at 10.30 in St. Mary's. Was it fun? Yes!\nNext line"));

    [Fact]
    public void A_reply_cut_off_at_the_length_limit_loses_its_unfinished_sentence()
        => Assert.Equal("Anna booked the flights. Ben chose the hotel.",
            Text.FitWholeSentences("Anna booked the flights. Ben chose the hotel. Clara will arrive on the", 100, Tokens, mayBeCutOff: true));

    [Fact]
    public void A_reply_over_the_limit_is_cut_back_to_whole_sentences()
    {
        var text = string.Join(' ', Enumerable.Range(1, 40).Select(i => $"Fact number {i} is about the trip to Lisbon."));

        var fitted = Text.FitWholeSentences(text, 50, Tokens, mayBeCutOff: false);

        Assert.InRange(Tokens.Count(fitted), 1, 50);
        Assert.EndsWith("Lisbon.", fitted, StringComparison.Ordinal);
        Assert.StartsWith(fitted, text, StringComparison.Ordinal);
    }

    [Fact]
    public void A_single_sentence_over_the_limit_is_cut_at_a_word_boundary()
    {
        var sentence = "This one sentence goes on and on about the many museums, restaurants, beaches and viewpoints of Lisbon.";

        var fitted = Text.FitWholeSentences(sentence, 10, Tokens, mayBeCutOff: false);

        Assert.InRange(Tokens.Count(fitted) + 1, 2, 10);
        Assert.EndsWith("…", fitted, StringComparison.Ordinal);
        Assert.StartsWith(fitted[..^1] + " ", sentence, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_huge_reply_without_a_sentence_end_is_cut_to_the_limit(bool cutOff)
    {
        var reply = string.Concat(Enumerable.Repeat("word ", 200_000)).Trim();

        var fitted = Text.FitWholeSentences(reply, 60, Tokens, mayBeCutOff: cutOff);

        Assert.InRange(Tokens.Count(fitted) + 1, 2, 60);
        Assert.StartsWith("word word", fitted, StringComparison.Ordinal);
    }

    [Fact]
    public void Lines_and_list_markers_survive_fitting()
        => Assert.Equal("- Anna booked flights.\n- Ben chose the hotel.",
            Text.FitWholeSentences("- Anna booked flights.\n- Ben chose the hotel.\n- Clara", 100, Tokens, mayBeCutOff: true));
}
