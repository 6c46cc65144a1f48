using System.Text.RegularExpressions;
using ModularChat.BuildingBlocks.Tokenization;

namespace ModularChat.Summaries.Summarizers;

/// <summary>Sentence splitting, word normalization and sentence-safe trimming shared by the summarizers.</summary>
internal static partial class Text
{
    private static readonly HashSet<string> Abbreviations = new(StringComparer.OrdinalIgnoreCase)
    {
        "mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "jr", "sr", "no", "approx", "dept", "inc", "ltd", "co",
    };

    /// <summary>
    /// Splits text into sentences: after ., ! or ? (and closing quotes or brackets) followed by white space, and at line
    /// breaks, but not after common abbreviations or single initials. Each sentence is trimmed; empty ones are dropped.
    /// </summary>
    public static List<string> Sentences(string text)
    {
        var result = new List<string>();
        foreach (var line in text.Split('\n'))
        {
            var start = 0;
            for (var i = 0; i < line.Length; i++)
            {
                var c = line[i];
                if (c is not ('.' or '!' or '?' or '…'))
                {
                    continue;
                }

                var end = i + 1;
                while (end < line.Length && line[end] is '.' or '!' or '?' or '"' or '\'' or ')' or ']' or '”' or '’')
                {
                    end++;
                }

                if (end < line.Length && !char.IsWhiteSpace(line[end]))
                {
                    i = end - 1;
                    continue;
                }

                if (c == '.' && IsAbbreviation(line, start, i))
                {
                    continue;
                }

                Add(result, line[start..end]);
                start = end;
                i = end - 1;
            }

            Add(result, line[start..]);
        }

        return result;
    }

    /// <summary>True when the sentence ends like a finished sentence (terminal punctuation, possibly closed by a quote or bracket).</summary>
    public static bool EndsLikeSentence(string sentence)
    {
        var s = sentence.TrimEnd();
        while (s.Length > 0 && s[^1] is '"' or '\'' or ')' or ']' or '”' or '’' or '*')
        {
            s = s[..^1];
        }

        return s.Length > 0 && s[^1] is '.' or '!' or '?' or '…' or ':';
    }

    /// <summary>
    /// The longest prefix of whole sentences within <paramref name="maxTokens"/>. A trailing fragment that does not end like a
    /// sentence is dropped when <paramref name="mayBeCutOff"/> (the writer stopped at its length limit). When there is no
    /// whole sentence to keep (the first one is over the limit, or the text is one unfinished sentence), the first sentence
    /// is cut at a word boundary to fit (<see cref="Shorten"/>): never empty for a text with words, never over the limit.
    /// </summary>
    public static string FitWholeSentences(string text, int maxTokens, ITokenCounter tokens, bool mayBeCutOff)
    {
        var lines = text.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        var kept = new List<string>();
        var used = 0;
        var stop = false;
        for (var l = 0; l < lines.Length && !stop; l++)
        {
            var sentences = Sentences(lines[l]);
            var keptOnLine = new List<string>();
            for (var s = 0; s < sentences.Count; s++)
            {
                var sentence = sentences[s];
                var isLast = l == lines.Length - 1 && s == sentences.Count - 1;
                var nothingKept = kept.Count == 0 && keptOnLine.Count == 0;
                if (isLast && mayBeCutOff && !EndsLikeSentence(sentence))
                {
                    if (nothingKept)
                    {
                        keptOnLine.Add(Shorten(sentence, maxTokens, s => tokens.Count(s) + 1));
                    }

                    stop = true;
                    break;
                }

                var cost = tokens.Count(sentence) + 1;
                if (used + cost > maxTokens)
                {
                    if (nothingKept)
                    {
                        keptOnLine.Add(Shorten(sentence, maxTokens, s => tokens.Count(s) + 1));
                    }

                    stop = true;
                    break;
                }

                used += cost;
                keptOnLine.Add(sentence);
            }

            if (keptOnLine.Count > 0)
            {
                // The line's list marker, if any, is part of its first sentence: the line structure survives.
                kept.Add(string.Join(' ', keptOnLine));
            }
            else if (!stop && lines[l].Trim().Length == 0 && kept.Count > 0)
            {
                kept.Add("");
            }
        }

        return string.Join('\n', kept).Trim();
    }

    /// <summary>
    /// <paramref name="text"/> whole when its <paramref name="cost"/> is within <paramref name="maxTokens"/>; else its longest
    /// start that is, cut at a word boundary when there is one in the second half of that start, and marked with an ellipsis.
    /// For a sentence too long for any budget (one long word, a pasted log without sentence ends), which would otherwise be
    /// lost whole. Empty only when not even one character fits.
    /// </summary>
    /// <param name="cost">What a candidate costs in tokens (the caller's line prefix and separators included).</param>
    public static string Shorten(string text, int maxTokens, Func<string, int> cost)
    {
        text = text.Trim();
        if (cost(text) <= maxTokens)
        {
            return text;
        }

        // Binary search on the cut (tokens grow with the prefix); no o200k token is longer than a few dozen characters,
        // so a fitting start is never longer than 256 characters a token, which bounds the search on huge texts.
        int fits = 0, high = (int)Math.Min(text.Length - 1, (long)maxTokens * 256);
        while (fits < high)
        {
            var mid = (fits + high + 1) / 2;
            if (cost(Cut(text, mid)) <= maxTokens)
            {
                fits = mid;
            }
            else
            {
                high = mid - 1;
            }
        }

        if (fits == 0)
        {
            return "";
        }

        var boundary = text.LastIndexOfAny([' ', '\t', '\n'], fits);
        if (boundary > fits / 2 && Cut(text, boundary) is { Length: > 1 } atWord && cost(atWord) <= maxTokens)
        {
            return atWord;
        }

        return Cut(text, fits);
    }

    /// <summary>The first <paramref name="length"/> characters (never half a surrogate pair), trimmed, with an ellipsis.</summary>
    private static string Cut(string text, int length)
    {
        if (length > 0 && char.IsHighSurrogate(text[length - 1]))
        {
            length--;
        }

        return text[..length].TrimEnd() + "…";
    }

    /// <summary>Words (letters or digits) of a text, as written.</summary>
    public static IEnumerable<string> Words(string text)
    {
        foreach (Match m in WordPattern().Matches(text))
        {
            yield return m.Value;
        }
    }

    /// <summary>A light normalization so "trips", "trip" and "Trip's" count as one term.</summary>
    public static string Term(string word)
    {
        var w = word.ToLowerInvariant().Replace('’', '\'');
        if (w.EndsWith("'s", StringComparison.Ordinal))
        {
            w = w[..^2];
        }

        if (w.Length > 5 && w.EndsWith("ing", StringComparison.Ordinal))
        {
            return w[..^3];
        }

        if (w.Length > 4 && w.EndsWith("ed", StringComparison.Ordinal))
        {
            return w[..^2];
        }

        if (w.Length > 4 && w.EndsWith("ies", StringComparison.Ordinal))
        {
            return w[..^3] + "y";
        }

        if (w.Length > 3 && w.EndsWith('s') && !w.EndsWith("ss", StringComparison.Ordinal) && !w.EndsWith("us", StringComparison.Ordinal))
        {
            return w[..^1];
        }

        return w;
    }

    public static bool IsStopword(string lowerWord) => Stopwords.Contains(lowerWord);

    private static bool IsAbbreviation(string line, int sentenceStart, int dot)
    {
        var wordStart = dot;
        while (wordStart > sentenceStart && !char.IsWhiteSpace(line[wordStart - 1]))
        {
            wordStart--;
        }

        var word = line[wordStart..dot].TrimStart('(', '"', '\'');
        return (word.Length == 1 && char.IsUpper(word[0])) || Abbreviations.Contains(word);
    }

    private static void Add(List<string> sentences, string sentence)
    {
        var s = sentence.Trim();
        if (s.Length > 0)
        {
            sentences.Add(s);
        }
    }

    [GeneratedRegex(@"\p{L}[\p{L}\p{Mn}'’-]*|\p{N}+(?:[.,:]\p{N}+)*")]
    private static partial Regex WordPattern();

    /// <summary>Function words and chat fillers that say nothing about what happened.</summary>
    private static readonly HashSet<string> Stopwords = new(StringComparer.Ordinal)
    {
        "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "aren't", "as", "at",
        "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "can't", "cannot", "could",
        "couldn't", "did", "didn't", "do", "does", "doesn't", "doing", "don't", "down", "during", "each", "even", "ever", "every",
        "few", "for", "from", "further", "get", "gets", "getting", "got", "had", "hadn't", "has", "hasn't", "have", "haven't",
        "having", "he", "he'd", "he'll", "he's", "her", "here", "here's", "hers", "herself", "him", "himself", "his", "how",
        "how's", "i", "i'd", "i'll", "i'm", "i've", "if", "in", "into", "is", "isn't", "it", "it's", "its", "itself", "just",
        "let's", "me", "more", "most", "much", "mustn't", "my", "myself", "no", "nor", "not", "now", "of", "off", "oh", "ok",
        "okay", "on", "once", "one", "only", "or", "other", "ought", "our", "ours", "ourselves", "out", "over", "own", "same",
        "shan't", "she", "she'd", "she'll", "she's", "should", "shouldn't", "so", "some", "such", "than", "that", "that's", "the",
        "their", "theirs", "them", "themselves", "then", "there", "there's", "these", "they", "they'd", "they'll", "they're",
        "they've", "this", "those", "through", "to", "too", "under", "until", "up", "us", "very", "was", "wasn't", "we", "we'd",
        "we'll", "we're", "we've", "were", "weren't", "what", "what's", "when", "when's", "where", "where's", "which", "while",
        "who", "who's", "whom", "why", "why's", "will", "with", "won't", "would", "wouldn't", "you", "you'd", "you'll", "you're",
        "you've", "your", "yours", "yourself", "yourselves", "yes", "yeah", "yep", "hey", "hi", "hello", "thanks", "thank",
        "wow", "lol", "haha", "awesome", "cool", "great", "nice", "really", "gonna", "wanna", "like", "know", "think", "thing",
        "things", "lot", "lots", "stuff", "sure", "totally", "definitely", "glad", "sounds", "sound", "amazing", "good", "well",
        "way", "still", "always", "something", "anything", "everything", "keep", "make", "made", "going", "go", "come", "see",
        "look", "looks", "much", "many", "may", "might", "must", "shall", "let", "say", "said", "tell", "told", "take", "want",
    };
}
