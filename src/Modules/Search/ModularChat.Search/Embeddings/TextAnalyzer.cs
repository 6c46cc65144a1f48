using System.Buffers;
using System.Text;

namespace ModularChat.Search.Embeddings;

/// <summary>
/// The built-in embedder's view of text: lower-cased word tokens (letters and digits of any script), English
/// clitics and stop words dropped, and a light English suffix-stripping stem. Deterministic and allocation-light;
/// the same analysis feeds the in-memory term statistics that weight a query's words.
/// </summary>
internal static class TextAnalyzer
{
    private static readonly SearchValues<string> Clitics = SearchValues.Create(["s", "t", "re", "ve", "ll", "d", "m"], StringComparison.Ordinal);

    // Function words and the fillers of chat ("yeah", "oh", "hey"): they carry no topic.
    private static readonly HashSet<string> StopWords = new(
        """
        a about above after again against all am an and any are aren as at be because been before being below between both but by
        can cannot could couldn did didn do does doesn doing don down during each few for from further had hadn has hasn have haven
        having he her here hers herself him himself his how i if in into is isn it its itself let me more most mustn my myself no
        nor not of off on once only or other ought our ours ourselves out over own same shan she should shouldn so some such than
        that the their theirs them themselves then there these they this those through to too under until up very was wasn we were
        weren what when where which while who whom why with won would wouldn you your yours yourself yourselves just also really
        yeah oh hey hi like get got
        """.Split((char[])[' ', '\n', '\r'], StringSplitOptions.RemoveEmptyEntries),
        StringComparer.Ordinal);

    /// <summary>The word tokens of <paramref name="text"/> that carry meaning (stop words and one-letter tokens dropped), in order.</summary>
    public static List<string> Tokens(string text)
    {
        var tokens = new List<string>();
        var builder = new StringBuilder(32);
        var i = 0;
        while (i < text.Length)
        {
            if (!char.IsLetterOrDigit(text[i]))
            {
                i++;
                continue;
            }

            builder.Clear();
            while (i < text.Length && char.IsLetterOrDigit(text[i]))
            {
                builder.Append(char.ToLowerInvariant(text[i]));
                i++;
            }

            // A clitic after an apostrophe ("she's", "don't", "we'll") is dropped; any other letters after one are kept.
            if (i + 1 < text.Length && text[i] is '\'' or '\u2019' && char.IsLetter(text[i + 1]))
            {
                var start = i + 1;
                var end = start;
                while (end < text.Length && char.IsLetterOrDigit(text[end]))
                {
                    end++;
                }

                var tail = text.AsSpan(start, end - start).ToString().ToLowerInvariant();
                if (!Clitics.Contains(tail))
                {
                    builder.Append(tail);
                }

                i = end;
            }

            if (builder.Length < 2)
            {
                continue;
            }

            var token = builder.ToString();
            if (!StopWords.Contains(token))
            {
                tokens.Add(token);
            }
        }

        return tokens;
    }

    /// <summary>
    /// A light English stem: strips one common inflectional suffix (-ies, -ing, -edly, -ed, -es, -s, -ly), undoubles a final
    /// consonant and drops a final e, so "painting", "painted" and "paints" meet. Words of other languages pass mostly unchanged.
    /// </summary>
    public static string Stem(string word)
    {
        ReadOnlySpan<(string Suffix, string Replacement, int MinLength)> rules =
        [
            ("ies", "y", 4), ("ing", "", 5), ("edly", "", 6), ("ed", "", 4), ("es", "", 4), ("s", "", 3), ("ly", "", 5),
        ];
        var w = word;
        foreach (var (suffix, replacement, minLength) in rules)
        {
            if (w.EndsWith(suffix, StringComparison.Ordinal) && w.Length >= minLength && w.Length - suffix.Length >= 3)
            {
                w = string.Concat(w.AsSpan(0, w.Length - suffix.Length), replacement);
                break;
            }
        }

        if (w.Length > 3 && w[^1] == w[^2] && w[^1] is not ('l' or 's' or 'z'))
        {
            w = w[..^1];
        }

        if (w.Length > 4 && w[^1] == 'e')
        {
            w = w[..^1];
        }

        return w;
    }

    /// <summary>The distinct stems of <paramref name="text"/>, as stable 32-bit term ids (for document-frequency statistics).</summary>
    public static int[] TermIds(string text)
    {
        var ids = new HashSet<int>();
        foreach (var token in Tokens(text))
        {
            ids.Add(TermId(Stem(token)));
        }

        return [.. ids];
    }

    /// <summary>A stable id for a stem (the same in every process and on every machine).</summary>
    public static int TermId(string stem) => unchecked((int)StableHash.Of("w:", stem));
}

/// <summary>A 64-bit FNV-1a hash with a final avalanche: stable across processes (unlike string.GetHashCode).</summary>
internal static class StableHash
{
    public static ulong Of(string prefix, ReadOnlySpan<char> value)
    {
        var hash = 14695981039346656037UL;
        foreach (var c in prefix)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        foreach (var c in value)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        // splitmix64 finalizer: spreads FNV's weak low bits over the whole word.
        hash ^= hash >> 30;
        hash *= 0xbf58476d1ce4e5b9UL;
        hash ^= hash >> 27;
        hash *= 0x94d049bb133111ebUL;
        hash ^= hash >> 31;
        return hash;
    }
}
