using ModularChat.BuildingBlocks.Background;
using System.Text;
using System.Text.RegularExpressions;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Summaries.Summarizers;

/// <summary>
/// The built-in, offline summarizer: graph-ranked sentences (TextRank over TF-IDF cosine similarity) chosen with
/// maximal marginal relevance under the token budget, each kept with its speaker and date, in conversation order.
/// Deterministic: the same input always gives the same summary.
/// </summary>
/// <remarks>
/// Incremental: the lines of the previous summary compete with the sentences of the new chunk. Each side first gets a share
/// of the budget proportional to the messages it stands for (the new chunk at most <see cref="MaxNewShare"/>, so earlier
/// facts are never all dropped), then the rest is filled with the best remaining sentences of either. Shares in
/// proportion make what is kept depend little on how the conversation was cut into merges: a job that happens to run
/// a few messages before the end leaves a small last chunk, which gets a small reserve and competes for the rest.
/// </remarks>
internal sealed partial class ExtractiveSummarizer(ITokenCounter tokens, int parallelism = 0) : IConversationSummarizer, IDisposable
{
    // Merges are CPU-bound: they run on a few threads the OS schedules below the service's requests.
    private readonly LowPriorityCpu _cpu = new(parallelism > 0 ? parallelism : Math.Max(1, Environment.ProcessorCount / 2), "summaries-extractive");

    public const string SummarizerName = "extractive";
    public const string Algorithm = "textrank-mmr";
    public const string AlgorithmVersion = "extractive-v2";

    private const double Damping = 0.85;
    private const int MaxIterations = 50;
    private const double Converged = 1e-6;
    private const int Neighbors = 24;
    private const double MinEdge = 0.01;
    private const int CommonTermFloor = 32;

    /// <summary>Relevance against redundancy in the maximal-marginal-relevance choice.</summary>
    private const double Lambda = 0.5;

    /// <summary>
    /// Centrality is damped (square root): in chat the most central sentences restate the dominant topic, while the facts
    /// worth keeping (a job lost, a trip taken) are often said once.
    /// </summary>
    private const double CentralityExponent = 0.5;

    /// <summary>What the speakers say of themselves ("I", "my", "we") is where the events of a conversation are.</summary>
    private const double FirstPerson = 1.3;

    private const double Question = 0.5;
    private const double DuplicateSimilarity = 0.8;
    private const double MaxNewShare = 0.9;

    public string Name => SummarizerName;

    public string Model => Algorithm;

    public string PromptVersion => AlgorithmVersion;

    public Task<SummaryMergeResult> MergeAsync(SummaryMergeInput input, CancellationToken cancellationToken)
        => _cpu.RunAsync(() => Merge(input, cancellationToken), cancellationToken);

    /// <summary>Lets the merge threads end (work already queued still runs).</summary>
    public void Dispose() => _cpu.Dispose();

    private SummaryMergeResult Merge(SummaryMergeInput input, CancellationToken cancellationToken)
    {
        var units = new List<Unit>();
        if (!string.IsNullOrWhiteSpace(input.PreviousSummary))
        {
            AddPrevious(units, input.PreviousSummary);
        }

        var oldCount = units.Count;
        AddMessages(units, input.Messages, informativeOnly: true);
        if (units.Count == oldCount)
        {
            // Nothing informative in the chunk (greetings, one-word answers): it is still what happened.
            AddMessages(units, input.Messages, informativeOnly: false);
        }

        if (units.Count == 0)
        {
            // Only instructions or tool output, and no summary yet: an empty summary would stand for these messages (and let
            // retention remove them), so they speak for themselves.
            AddMessages(units, input.Messages, informativeOnly: false, allRoles: true);
        }

        cancellationToken.ThrowIfCancellationRequested();
        var vectors = Vectorize(units);

        // Earlier lines are ranked against everything (what stays central as the conversation goes on); new sentences only
        // among themselves, so a new fact is not outranked for resembling less than what the summary already says.
        var graph = SimilarityGraph(vectors);
        var scores = new double[units.Count];
        PageRank(graph, member: _ => true, scores, keep: i => i < oldCount);
        PageRank(graph, member: i => i >= oldCount, scores, keep: i => i >= oldCount);
        for (var i = 0; i < units.Count; i++)
        {
            units[i] = units[i] with { Score = Math.Pow(scores[i], CentralityExponent) * Informativeness(units[i].Text) };
        }
        var selected = Select(units, vectors, input, oldCount);
        var text = Render(units, selected);
        if (text.Length == 0)
        {
            text = input.PreviousSummary?.Trim() ?? "";
        }

        var inputTokens = (input.PreviousSummary is null ? 0 : tokens.Count(input.PreviousSummary)) + input.Messages.Sum(m => m.TokenCount);
        return new SummaryMergeResult(text, inputTokens, tokens.Count(text));
    }

    private static void AddPrevious(List<Unit> units, string previous)
    {
        var line = 0;
        foreach (var raw in previous.Split('\n'))
        {
            var trimmed = raw.Trim();
            if (trimmed.Length == 0)
            {
                continue;
            }

            var match = SummaryLine().Match(trimmed);
            if (match.Success)
            {
                units.Add(new Unit(match.Groups["text"].Value, match.Groups["speaker"].Value, match.Groups["date"].Value, Old: true, Source: line++, Position: 0));
                continue;
            }

            // Prose (a summary another summarizer wrote): each sentence is a unit of its own.
            var position = 0;
            foreach (var sentence in Text.Sentences(trimmed.TrimStart('-', '*', '•', ' ')))
            {
                units.Add(new Unit(sentence, null, null, Old: true, Source: line, Position: position++));
            }

            line++;
        }
    }

    private static void AddMessages(List<Unit> units, IReadOnlyList<ConversationMessage> messages, bool informativeOnly, bool allRoles = false)
    {
        foreach (var m in messages)
        {
            if (!allRoles && m.Role is MessageRole.System or MessageRole.Tool)
            {
                continue; // instructions and tool output are not what the people said
            }

            var speaker = MessageSpeakers.Of(m);
            var date = MessageSpeakers.Date(m);
            var position = 0;
            foreach (var sentence in Text.Sentences(m.Content))
            {
                if (!informativeOnly || ContentWords(sentence) >= 3)
                {
                    units.Add(new Unit(sentence, speaker, date, Old: false, Source: m.Sequence, Position: position));
                }

                position++;
            }
        }
    }

    private static int ContentWords(string sentence)
        => Text.Words(sentence).Count(w => w.Length >= 3 && !Text.IsStopword(w.ToLowerInvariant()));

    /// <summary>TF-IDF vectors (terms of content words, IDF over the candidate sentences), L2-normalized.</summary>
    private static List<Dictionary<string, double>> Vectorize(List<Unit> units)
    {
        var termCounts = new List<Dictionary<string, int>>(units.Count);
        var documentFrequency = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var unit in units)
        {
            var counts = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var word in Text.Words(unit.Text))
            {
                var lower = word.ToLowerInvariant();
                if (lower.Length < 2 || Text.IsStopword(lower))
                {
                    continue;
                }

                var term = Text.Term(lower);
                counts[term] = counts.GetValueOrDefault(term) + 1;
            }

            foreach (var term in counts.Keys)
            {
                documentFrequency[term] = documentFrequency.GetValueOrDefault(term) + 1;
            }

            termCounts.Add(counts);
        }

        var n = units.Count;
        var vectors = new List<Dictionary<string, double>>(n);
        foreach (var counts in termCounts)
        {
            var vector = new Dictionary<string, double>(counts.Count, StringComparer.Ordinal);
            var norm = 0.0;
            foreach (var (term, count) in counts)
            {
                var weight = (1 + Math.Log(count)) * (1 + Math.Log((double)n / documentFrequency[term]));
                vector[term] = weight;
                norm += weight * weight;
            }

            norm = Math.Sqrt(norm);
            if (norm > 0)
            {
                foreach (var term in counts.Keys)
                {
                    vector[term] /= norm;
                }
            }

            vectors.Add(vector);
        }

        return vectors;
    }

    private static double Similarity(Dictionary<string, double> a, Dictionary<string, double> b)
    {
        if (a.Count > b.Count)
        {
            (a, b) = (b, a);
        }

        var dot = 0.0;
        foreach (var (term, weight) in a)
        {
            if (b.TryGetValue(term, out var other))
            {
                dot += weight * other;
            }
        }

        return dot;
    }

    /// <summary>True when every term of the smaller sentence (at least three) is in the other: it adds nothing.</summary>
    private static bool Contained(Dictionary<string, double> a, Dictionary<string, double> b)
    {
        var (small, large) = a.Count <= b.Count ? (a, b) : (b, a);
        return small.Count >= 3 && small.Keys.All(large.ContainsKey);
    }

    /// <summary>
    /// Each sentence's strongest links to the others (cosine similarity of their TF-IDF vectors). Keeping the
    /// <see cref="Neighbors"/> strongest per sentence keeps ranking linear in the chunk size even when every sentence of a
    /// chunk resembles every other (a chat that repeats itself): PageRank over the full graph would be quadratic.
    /// </summary>
    private static List<(int To, double Weight)>[] SimilarityGraph(List<Dictionary<string, double>> vectors)
    {
        var n = vectors.Count;
        var postings = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        for (var i = 0; i < n; i++)
        {
            foreach (var term in vectors[i].Keys)
            {
                if (!postings.TryGetValue(term, out var list))
                {
                    postings[term] = list = [];
                }

                list.Add(i);
            }
        }

        // A term in a large share of the sentences links nearly everything to everything and weighs little (its IDF is
        // low): leaving it out of the links keeps building the graph from going quadratic on repetitive chats.
        var common = Math.Max(CommonTermFloor, n / 5);
        var graph = new List<(int To, double Weight)>[n];
        var dots = new double[n];
        var touched = new List<int>();
        for (var i = 0; i < n; i++)
        {
            foreach (var (term, weight) in vectors[i])
            {
                var list = postings[term];
                if (list.Count > common)
                {
                    continue;
                }

                foreach (var j in list)
                {
                    if (j == i)
                    {
                        continue;
                    }

                    if (dots[j] == 0)
                    {
                        touched.Add(j);
                    }

                    dots[j] += weight * vectors[j][term];
                }
            }

            var edges = new List<(int To, double Weight)>(Math.Min(touched.Count, Neighbors));
            foreach (var j in touched)
            {
                if (dots[j] > MinEdge)
                {
                    edges.Add((j, dots[j]));
                }

                dots[j] = 0;
            }

            touched.Clear();
            if (edges.Count > Neighbors)
            {
                // Strongest first, ties by position: the same input always keeps the same edges.
                edges.Sort((x, y) => y.Weight != x.Weight ? y.Weight.CompareTo(x.Weight) : x.To.CompareTo(y.To));
                edges.RemoveRange(Neighbors, edges.Count - Neighbors);
            }

            graph[i] = edges;
        }

        return graph;
    }

    /// <summary>
    /// Weighted PageRank over the sentences <paramref name="member"/> selects (edges to others ignored), until it settles;
    /// writes the scores of those <paramref name="keep"/> selects, scaled so the average sentence scores 1.
    /// </summary>
    private static void PageRank(List<(int To, double Weight)>[] graph, Func<int, bool> member, double[] scores, Func<int, bool> keep)
    {
        var members = Enumerable.Range(0, graph.Length).Where(member).ToList();
        var n = members.Count;
        if (n == 0)
        {
            return;
        }

        var index = new Dictionary<int, int>(n);
        for (var i = 0; i < n; i++)
        {
            index[members[i]] = i;
        }

        var edges = new List<(int To, double Weight)>[n];
        var outWeight = new double[n];
        for (var i = 0; i < n; i++)
        {
            edges[i] = [];
            foreach (var (to, weight) in graph[members[i]])
            {
                if (index.TryGetValue(to, out var j))
                {
                    edges[i].Add((j, weight));
                    outWeight[i] += weight;
                }
            }
        }

        var score = Enumerable.Repeat(1.0 / n, n).ToArray();
        var next = new double[n];
        for (var iteration = 0; iteration < MaxIterations; iteration++)
        {
            var dangling = 0.0;
            Array.Fill(next, 0);
            for (var i = 0; i < n; i++)
            {
                if (outWeight[i] == 0)
                {
                    dangling += score[i];
                    continue;
                }

                foreach (var (to, weight) in edges[i])
                {
                    next[to] += score[i] * weight / outWeight[i];
                }
            }

            var change = 0.0;
            for (var i = 0; i < n; i++)
            {
                next[i] = ((1 - Damping) / n) + (Damping * (next[i] + (dangling / n)));
                change += Math.Abs(next[i] - score[i]);
            }

            (score, next) = (next, score);
            if (change < Converged)
            {
                break;
            }
        }

        for (var i = 0; i < n; i++)
        {
            if (keep(members[i]))
            {
                scores[members[i]] = score[i] * n;
            }
        }
    }

    /// <summary>Names, numbers and substance make a sentence worth keeping; questions and fragments less so.</summary>
    private static double Informativeness(string sentence)
    {
        var words = Text.Words(sentence).ToList();
        var content = words.Count(w => w.Length >= 3 && !Text.IsStopword(w.ToLowerInvariant()));
        var specifics = words.Skip(1).Count(w => (char.IsUpper(w[0]) && w != "I" && !Text.IsStopword(w.ToLowerInvariant())) || char.IsDigit(w[0]));
        var factor = Math.Min(1.0, content / 6.0) * (1 + (0.15 * Math.Min(specifics, 4)));
        if (sentence.EndsWith('?'))
        {
            factor *= Question;
        }

        var first = words.Count(w => w is "I" or "I'm" or "I've" or "I'd" or "I'll" || w.ToLowerInvariant() is "my" or "me" or "we" or "our");
        var second = words.Count(w => w.ToLowerInvariant() is "you" or "your" or "you're" or "you've");
        if (first > 0 && first >= second)
        {
            factor *= FirstPerson;
        }

        // Very long sentences cost much of the budget for one fact.
        if (words.Count > 45)
        {
            factor *= 45.0 / words.Count;
        }

        return factor;
    }

    private HashSet<int> Select(List<Unit> units, List<Dictionary<string, double>> vectors, SummaryMergeInput input, int oldCount)
    {
        var budget = input.Settings.MaxSummaryTokens;
        var selected = new HashSet<int>();
        // Token counts are exact but only computed for sentences that come up for choice; until then a lower bound (no
        // o200k token is longer than 64 characters) lets candidates that obviously cannot fit be skipped. A sentence over the
        // whole budget is cut to fit it when it comes up (see below), so no bound is above the budget.
        var cost = new int[units.Count];
        var exact = new bool[units.Count];
        for (var i = 0; i < units.Count; i++)
        {
            cost[i] = Math.Min(budget, 1 + ((Line(units[i], units[i].Text).Length + 63) / 64));
        }

        // Kept up to date as sentences are chosen (each choice is compared once with every open candidate): a repeat of
        // anything kept is out; otherwise only likeness to chosen sentences of the same side counts against a candidate,
        // so a new sentence that updates a fact of the summary (same names, new facts) is not held back.
        var redundancy = new double[units.Count];
        var duplicate = new bool[units.Count];

        var used = 0;
        var oldIndices = Enumerable.Range(0, oldCount).ToList();
        var newIndices = Enumerable.Range(oldCount, units.Count - oldCount).ToList();
        if (oldCount > 0 && newIndices.Count > 0)
        {
            var newMessages = (double)input.NewMessageCount; // messages read again are already the previous lines' share
            var share = Math.Min(newMessages / (newMessages + Math.Max(1, input.PreviouslyCoveredMessages)), MaxNewShare);
            used = Pick(newIndices, (int)(budget * share), used);
            used = Pick(oldIndices, used + (int)(budget * (1 - share)), used);
        }

        Pick([.. oldIndices, .. newIndices], budget, used);
        return selected;

        int Pick(List<int> candidates, int limit, int spent)
        {
            var open = candidates.Where(i => !selected.Contains(i) && !duplicate[i]).ToList();
            var maxScore = open.Count == 0 ? 1 : Math.Max(open.Max(i => units[i].Score), double.Epsilon);
            while (true)
            {
                var best = -1;
                var bestValue = double.NegativeInfinity;
                foreach (var i in open)
                {
                    if (duplicate[i] || spent + cost[i] > limit)
                    {
                        continue;
                    }

                    var value = (Lambda * units[i].Score / maxScore) - ((1 - Lambda) * redundancy[i]);
                    if (value > bestValue)
                    {
                        bestValue = value;
                        best = i;
                    }
                }

                if (best < 0)
                {
                    return spent;
                }

                if (!exact[best])
                {
                    // The line prefix ("- [date] Speaker: ") is paid once per line; charging it per sentence keeps the budget safe.
                    var unit = units[best];
                    cost[best] = tokens.Count(Line(unit, unit.Text)) + 1;
                    if (cost[best] > budget)
                    {
                        // One sentence longer than the whole budget (a long word, a pasted log without sentence ends): skipped, it
                        // would leave its messages unrepresented (an empty summary when it is all they say), so it is cut to fit.
                        var shortened = Text.Shorten(unit.Text, budget, t => tokens.Count(Line(unit, t)) + 1);
                        if (shortened.Length > 0)
                        {
                            units[best] = unit with { Text = shortened };
                            cost[best] = tokens.Count(Line(units[best], shortened)) + 1;
                        }
                    }

                    exact[best] = true;
                    continue;
                }

                selected.Add(best);
                spent += cost[best];
                open.Remove(best);
                for (var i = 0; i < units.Count; i++)
                {
                    if (selected.Contains(i) || duplicate[i])
                    {
                        continue;
                    }

                    var similarity = Similarity(vectors[i], vectors[best]);
                    if (similarity > DuplicateSimilarity || Contained(vectors[i], vectors[best]))
                    {
                        duplicate[i] = true;
                    }
                    else if (units[i].Old == units[best].Old)
                    {
                        redundancy[i] = Math.Max(redundancy[i], similarity);
                    }
                }
            }
        }
    }

    /// <summary>Selected sentences in conversation order; sentences of one message (or one earlier line) share a line.</summary>
    private static string Render(List<Unit> units, HashSet<int> selected)
    {
        var ordered = selected.Select(i => units[i])
            .OrderBy(u => u.Old ? 0 : 1)
            .ThenBy(u => u.Source)
            .ThenBy(u => u.Position)
            .ToList();
        var text = new StringBuilder();
        for (var i = 0; i < ordered.Count;)
        {
            var first = ordered[i];
            var sentences = new List<string> { first.Text };
            var j = i + 1;
            while (j < ordered.Count && ordered[j].Old == first.Old && ordered[j].Source == first.Source)
            {
                sentences.Add(ordered[j].Text);
                j++;
            }

            text.Append(Line(first, string.Join(' ', sentences))).Append('\n');
            i = j;
        }

        return text.ToString().TrimEnd();
    }

    private static string Line(Unit unit, string text)
        => unit.Speaker is null ? $"- {text}" : $"- [{unit.Date}] {unit.Speaker}: {text}";

    [GeneratedRegex(@"^- \[(?<date>\d{4}-\d{2}-\d{2})\] (?<speaker>[^:\n]{1,100}): (?<text>.+)$")]
    private static partial Regex SummaryLine();

    /// <summary>A candidate sentence.</summary>
    /// <param name="Old">From the previous summary (else from the new messages).</param>
    /// <param name="Source">The message sequence (new) or line number (old) it comes from.</param>
    /// <param name="Position">Its place within that message or line.</param>
    private sealed record Unit(string Text, string? Speaker, string? Date, bool Old, long Source, int Position, double Score = 0);
}
