using Microsoft.Extensions.AI;

namespace ModularChat.Providers.Features.Chat;

/// <summary>
/// The calls of one turn that carry a mark (beyond the turn's limit, failed), safe to use from the calls running at once.
/// Each call is marked as the object the model's answer made, since a provider may use one call id again in a later
/// round (numbering its calls per round): the stored turn asks about a call. A result streamed as it comes carries only
/// its call's id, so the latest mark given for an id is kept as well.
/// </summary>
internal sealed class CallMarks
{
    private readonly Lock _gate = new();
    private readonly HashSet<FunctionCallContent> _marked = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<string, bool> _latest = new(StringComparer.Ordinal);

    /// <summary>Marks <paramref name="call"/> (or not): the latest word for its id; a call once marked stays marked.</summary>
    public void Set(FunctionCallContent call, bool marked)
    {
        lock (_gate)
        {
            _latest[call.CallId] = marked;
            if (marked)
            {
                _marked.Add(call);
            }
        }
    }

    /// <summary>Whether <paramref name="call"/> is marked.</summary>
    public bool Contains(FunctionCallContent call)
    {
        lock (_gate)
        {
            return _marked.Contains(call);
        }
    }

    /// <summary>Whether the latest call with <paramref name="callId"/> is marked.</summary>
    public bool Latest(string callId)
    {
        lock (_gate)
        {
            return _latest.GetValueOrDefault(callId);
        }
    }
}
