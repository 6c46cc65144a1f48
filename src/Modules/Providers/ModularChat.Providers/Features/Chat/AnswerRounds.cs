namespace ModularChat.Providers.Features.Chat;

/// <summary>
/// A turn's answer is the text of every round of the model, each round's apart from the next's by a blank line. This is
/// that rule, for the answer stored (<see cref="Join"/>) and for the deltas streamed as the rounds come
/// (<see cref="Before"/>), kept in one place so that the deltas joined are the answer (apart from white space at the ends
/// of a round's text, which the answer leaves out).
/// </summary>
internal sealed class AnswerRounds
{
    private const string Separator = "\n\n";

    private bool _said; // whether the model's text (more than white space) has streamed
    private bool _nextRound; // whether a round ended since it last did

    /// <summary>
    /// What to stream before <paramref name="text"/>, the model's next text: the separator when it is the first text (more
    /// than white space) of a round that follows one with text; else null.
    /// </summary>
    public string? Before(string text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        var separator = _said && _nextRound ? Separator : null;
        (_said, _nextRound) = (true, false);
        return separator;
    }

    /// <summary>The model's round ended (the tools answered): its next text begins the next round's.</summary>
    public void RoundEnded() => _nextRound = true;

    /// <summary>The answer: the texts of the rounds that have any (more than white space), each trimmed, apart.</summary>
    public static string Join(IEnumerable<string> rounds) => string.Join(Separator, rounds.Select(r => r.Trim()));
}
