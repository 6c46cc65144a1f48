using ModularChat.BuildingBlocks.Tokenization;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// The o200k counter. Every expected count was computed with Microsoft.ML.Tokenizers 2.0.1: the messages appended before
/// 3.0.0 are stored with those counts, so a later version must count the same. The 100,000-character runs took 5-60 s each
/// with 2.0.1 (its byte-pair merge was quadratic in a pre-token's length) and take milliseconds now; no test asserts a
/// time, the benchmark's <c>tokens</c> scenario measures it.
/// </summary>
public sealed class TokenCounterTests
{
    private static readonly O200kTokenCounter Tokens = new();

    [Theory]
    [InlineData("", 0)]
    [InlineData("Hello, world! How are you doing today?", 10)]
    [InlineData("I finally booked the flights to Lisbon for the twelfth of June, and my sister Clara will join us on the fourteenth.", 26)]
    [InlineData("public int Count(string text) => string.IsNullOrEmpty(text) ? 0 : _tokenizer.CountTokens(text);\n    if (x > 10) { return y; }\n", 38)]
    [InlineData("今日は良い天気ですね。明日も晴れるでしょうか？我们明天去北京，好吗？", 23)]
    [InlineData("Great job 🎉🎉🎉 see you soon 👋🏽", 15)]
    [InlineData("Der Café-Besitzer sagte: «Ça coûte 3,50 €» — naïve 日本語 mix ١٢٣ Привет! e\u0301", 31)]
    [InlineData("สวัสดีครับ วันนี้อากาศดีมาก", 11)]
    [InlineData("   \n\n\t  ", 2)]
    [InlineData("<|endoftext|> is counted as text", 5)]
    public void Ordinary_text_counts_as_it_always_has(string text, int expected)
        => Assert.Equal(expected, Tokens.Count(text));

    [Fact]
    public void Longer_ordinary_text_counts_as_it_always_has()
        => Assert.Equal(2001, Tokens.Count(Repeated("The quick brown fox jumps over the lazy dog. ", 200)));

    [Theory]
    [InlineData("日", 5_000, 2_500)]
    [InlineData("a", 5_000, 625)]
    [InlineData("ab", 2_500, 1_250)]
    [InlineData("😀", 2_500, 2_500)]
    [InlineData("日", 100_000, 50_000)]
    [InlineData("a", 100_000, 12_500)]
    [InlineData("ab", 50_000, 25_000)]
    [InlineData("😀", 50_000, 50_000)]
    public void A_run_without_spaces_or_punctuation_is_counted_exactly(string unit, int times, int expected)
        => Assert.Equal(expected, Tokens.Count(Repeated(unit, times)));

    [Theory]
    [InlineData(5_000, 9_604)]
    [InlineData(100_000, 191_861)]
    public void A_run_of_different_CJK_characters_is_counted_exactly(int length, int expected)
        => Assert.Equal(expected, Tokens.Count(DifferentCjk(length)));

    private static string Repeated(string unit, int times) => string.Concat(Enumerable.Repeat(unit, times));

    /// <summary>CJK characters spread over the whole block, no two neighbours alike (the same text in every run).</summary>
    private static string DifferentCjk(int length) => string.Create(length, 0, (span, _) =>
    {
        for (var i = 0; i < span.Length; i++)
        {
            span[i] = (char)(0x4E00 + (int)(i * 2654435761L % 20902));
        }
    });
}
