using System.Diagnostics;
using System.Text;
using ModularChat.BuildingBlocks.Tokenization;

namespace ModularChat.Benchmarks;

/// <summary>
/// The o200k token counter on texts the pre-tokenizer keeps as one long piece (a 100,000-character run of one character,
/// of random CJK characters, of one Latin letter, of emoji) against ordinary text of the same length measured in the same
/// run: CJK with punctuation every few dozen characters, the costliest ordinary text per character (most tokens). In
/// process, without PostgreSQL or a host. The target is the ratio of the worst case's time per character to the ordinary
/// text's: near 1 when counting is linear; it was ~100-300 when the byte-pair merge was quadratic in a piece's length.
/// </summary>
internal sealed class TokenBenchmark(Measurements results)
{
    private const int Length = 100_000;

    /// <summary>How long one text may keep being counted again for a steadier minimum (at least once, at most <see cref="Repeats"/> times).</summary>
    private static readonly TimeSpan PerText = TimeSpan.FromSeconds(2);

    private const int Repeats = 5;

    public Task RunAsync()
    {
        var counter = new O200kTokenCounter();
        var random = new Random(42);
        counter.Count(Ordinary(random, 2_000)); // loads the vocabulary and warms the code up

        var ordinary = Ordinary(random, Length);
        var ordinarySeconds = MinSeconds(counter, ordinary, out var ordinaryTokens);
        Console.Error.WriteLine($"[bench] tokens: ordinary CJK text, {Length:N0} characters, {ordinaryTokens:N0} tokens, {ordinarySeconds * 1000:0.#} ms");

        var worstName = "";
        var worstSeconds = 0.0;
        foreach (var (name, text) in WorstCases(random))
        {
            var seconds = MinSeconds(counter, text, out var tokens);
            Console.Error.WriteLine($"[bench] tokens: {name}, {text.Length:N0} characters, {tokens:N0} tokens, {seconds * 1000:0.#} ms");
            if (seconds / text.Length > worstSeconds / Length)
            {
                (worstName, worstSeconds) = (name, seconds * Length / text.Length);
            }
        }

        Console.Error.WriteLine($"[bench] tokens: the worst case is {worstName}");
        results.Add("token_count_ordinary_us_per_char", ordinarySeconds * 1e6 / Length);
        results.Add("token_count_worst_us_per_char", worstSeconds * 1e6 / Length);
        results.Add("token_count_worst_vs_ordinary_ratio", worstSeconds / ordinarySeconds);
        return Task.CompletedTask;
    }

    private static IEnumerable<(string Name, string Text)> WorstCases(Random random)
    {
        yield return ("one CJK character repeated", new string('日', Length));
        yield return ("random CJK characters without punctuation", Cjk(random, Length, punctuateEvery: 0));
        yield return ("one Latin letter repeated", new string('a', Length));
        yield return ("one emoji repeated", new StringBuilder(Length).Insert(0, "😀", Length / 2).ToString());
    }

    /// <summary>Random CJK characters with a comma or full stop after every 8-30 of them.</summary>
    private static string Ordinary(Random random, int length) => Cjk(random, length, punctuateEvery: 30);

    private static string Cjk(Random random, int length, int punctuateEvery)
    {
        var text = new StringBuilder(length);
        var untilPunctuation = punctuateEvery > 0 ? random.Next(8, punctuateEvery + 1) : int.MaxValue;
        while (text.Length < length)
        {
            if (--untilPunctuation == 0)
            {
                text.Append(random.Next(3) == 0 ? '。' : '，');
                untilPunctuation = random.Next(8, punctuateEvery + 1);
            }
            else
            {
                text.Append((char)random.Next(0x4E00, 0x9FA6));
            }
        }

        return text.ToString();
    }

    private static double MinSeconds(ITokenCounter counter, string text, out int tokens)
    {
        var best = double.MaxValue;
        var spent = Stopwatch.StartNew();
        tokens = 0;
        for (var i = 0; i < Repeats && (i == 0 || spent.Elapsed < PerText); i++)
        {
            var started = Stopwatch.GetTimestamp();
            tokens = counter.Count(text);
            best = Math.Min(best, Stopwatch.GetElapsedTime(started).TotalSeconds);
        }

        return best;
    }
}
