using System.Globalization;
using Wolverine;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>
/// A handler that logs its own failed attempts (naming what it was about, once, with the exception) marks the attempt on the
/// envelope, and Wolverine's entries for the same attempt (its retry "was rescheduled" and its "moved to the error queue",
/// which carry the envelope) go below Warning: an operator reads one entry per failed attempt, not three, two of them with
/// the same stack trace. A failure the handler did not see (the transaction's commit after it returned) keeps Wolverine's,
/// unless the handler's retry policy hands it to the handler's log first (the summary jobs': SummariesMessaging).
/// </summary>
public static class HandlerFailureLog
{
    /// <summary>The envelope header that holds the attempt whose failure the handler logged.</summary>
    public const string Header = "modularchat-failure-logged";

    /// <summary>Says that the handler logged the failure of <paramref name="envelope"/>'s current attempt.</summary>
    public static void MarkLogged(Envelope envelope)
        => envelope.Headers[Header] = envelope.Attempts.ToString(CultureInfo.InvariantCulture);

    /// <summary>Whether the handler logged the failure of <paramref name="envelope"/>'s current attempt.</summary>
    public static bool WasLogged(Envelope envelope)
        => envelope.Headers.TryGetValue(Header, out var attempt) && attempt == envelope.Attempts.ToString(CultureInfo.InvariantCulture);
}
