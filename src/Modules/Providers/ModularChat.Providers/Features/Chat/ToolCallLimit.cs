using Microsoft.Extensions.AI;

namespace ModularChat.Providers.Features.Chat;

/// <summary>
/// The tool calls one turn may run (<see cref="ChatTurnOptions.MaxToolCalls"/>): the first that many the model asks, over
/// all rounds, offered or not. A model can ask hundreds of calls in one round; run one after another, each up to
/// Mcp:ToolCallTimeout, they kept the turn going for hours, and stored with the answer they made an append larger than a
/// batch may be, refused after every tool had run. The calls beyond are not run: the model is told so in their results,
/// and they are not stored (the answer's metadata counts them, <c>toolCallsNotRun</c>).
/// <para>
/// Nor are the calls the model asks in the turn's last round (<see cref="ChatTurnOptions.MaxToolRounds"/> used up), in
/// which function invocation offers no tools and runs nothing: known when the round is asked for, so they are said to be
/// not run as they stream, not left looking like calls whose results never come.
/// </para>
/// </summary>
internal sealed class ToolCallLimit(int max, int maxRounds)
{
    private readonly Lock _gate = new();
    private readonly HashSet<FunctionCallContent> _seen = new(ReferenceEqualityComparer.Instance);
    private readonly CallMarks _refused = new();
    private readonly CallMarks _lastRound = new();
    private int _rounds;

    public int Max => max;

    /// <summary>The rounds of tool calls function invocation runs; the model is asked once more, offered no tools.</summary>
    public int MaxRounds => maxRounds;

    /// <summary>What the model is told instead of the result of a call beyond the limit.</summary>
    public string Refusal => $"Not called: at most {max} tool call{(max == 1 ? "" : "s")} per turn. Answer with what the tools have returned so far.";

    /// <summary>Why a call of the last round is not run.</summary>
    public string LastRoundReason => $"Not called: the turn's last round runs no tools (at most {maxRounds} round{(maxRounds == 1 ? "" : "s")} of tool calls per turn, Chat:MaxToolRounds).";

    /// <summary>Counts a request to the model (a round); true for the last, after <see cref="MaxRounds"/> rounds of tool calls.</summary>
    public bool NextRound() => Interlocked.Increment(ref _rounds) > maxRounds;

    /// <summary>
    /// Counts the calls among <paramref name="contents"/>, in the order the model asked them (each once), of the last
    /// round when <paramref name="lastRound"/>.
    /// </summary>
    public void Count(IEnumerable<AIContent> contents, bool lastRound)
    {
        lock (_gate)
        {
            foreach (var call in contents.OfType<FunctionCallContent>())
            {
                if (!_seen.Add(call))
                {
                    continue;
                }

                _refused.Set(call, _seen.Count > max);
                _lastRound.Set(call, lastRound);
            }
        }
    }

    /// <summary>Whether <paramref name="call"/> was asked in the last round (not run, not stored).</summary>
    public bool InLastRound(FunctionCallContent call) => _lastRound.Contains(call);

    /// <summary>Whether <paramref name="call"/> is beyond the limit (not run, not stored).</summary>
    public bool Refused(FunctionCallContent call) => _refused.Contains(call);

    /// <summary>Whether the latest call with <paramref name="callId"/> was beyond the limit (for a result streamed as it comes).</summary>
    public bool LatestRefused(string callId) => _refused.Latest(callId);
}

/// <summary>
/// Counts the model's tool calls for <see cref="ToolCallLimit"/> as its answers arrive, below the function invocation
/// that runs them, so that every call is counted in the order asked, also one of a tool that was not offered (which is
/// never run, but stored like any other), and every request to the model as a round, so that the calls of the last
/// round are known as they arrive.
/// <para>
/// A call whose id another call of the same answer (round) already has gets an id of its own first: the id with
/// <c>_2</c>, <c>_3</c>, ... appended, the first not taken in the round. Results find their call by its id, so two calls
/// of one id had their results attached to each other's call (reported and stored that way), and the provider was sent
/// one id twice in the next round. The model sees the new id in the history it is sent, and the turn stores it.
/// (An id used again in a later round is a provider numbering its calls per round, and is left as it is.)
/// </para>
/// </summary>
internal sealed class ToolCallCounting(IChatClient inner, ToolCallLimit limit) : DelegatingChatClient(inner)
{
    public override async Task<ChatResponse> GetResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var lastRound = limit.NextRound();
        var response = await base.GetResponseAsync(messages, options, cancellationToken);
        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (var message in response.Messages)
        {
            GiveUniqueIds(message.Contents, ids);
        }

        limit.Count(response.Messages.SelectMany(m => m.Contents), lastRound);
        return response;
    }

    public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var lastRound = limit.NextRound();
        var ids = new HashSet<string>(StringComparer.Ordinal);
        await foreach (var update in base.GetStreamingResponseAsync(messages, options, cancellationToken))
        {
            GiveUniqueIds(update.Contents, ids);
            limit.Count(update.Contents, lastRound);
            yield return update;
        }
    }

    /// <summary>Replaces each call among <paramref name="contents"/> whose id is in <paramref name="ids"/> (the round's so far) by one with an id of its own.</summary>
    private static void GiveUniqueIds(IList<AIContent> contents, HashSet<string> ids)
    {
        for (var i = 0; i < contents.Count; i++)
        {
            if (contents[i] is not FunctionCallContent call || ids.Add(call.CallId))
            {
                continue;
            }

            var id = call.CallId;
            for (var n = 2; !ids.Add(id = $"{call.CallId}_{n}"); n++)
            {
            }

            contents[i] = new FunctionCallContent(id, call.Name, call.Arguments)
            {
                Exception = call.Exception,
                InformationalOnly = call.InformationalOnly,
                RawRepresentation = call.RawRepresentation,
                AdditionalProperties = call.AdditionalProperties,
                Annotations = call.Annotations,
            };
        }
    }
}
