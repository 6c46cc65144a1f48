using Wolverine;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>
/// A module's own entry and count for a message of <see cref="MessageType"/> that <see cref="DatabaseOutages"/> moves to the
/// dead-letter store after <c>Messaging:MaxAttemptsWhileDatabaseAnswers</c> failures while the database answered, or that
/// <see cref="ReportedDeadLetters.RetryOtherFailures"/> moves there after its retries of any other failure, in place
/// of the rule's generic error, which names only the message type, the envelope and the tenant: the module knows what the message was
/// about (a tenant, conversations), what brings it back, and counts it with the messages it gives up itself. Registered in
/// the services as a singleton, at most one per message type and handler (<see cref="Reports"/>); a message type without
/// one keeps the generic error. <see cref="DeadLetterReport{TMessage}"/> is the shape of most.
/// </summary>
public interface IDeadLetterReport
{
    /// <summary>The <c>outcome</c> tag value with which every module counts a message it gave up to the dead-letter store.</summary>
    public const string Outcome = "dead_letter";

    /// <summary>The type of the envelope's message this reports (exactly: a batch's is the array type).</summary>
    Type MessageType { get; }

    /// <summary>
    /// Whether this reports <paramref name="envelope"/>: its message is of <see cref="MessageType"/>, by default. An event that
    /// several modules handle (each in its own queue, MultipleHandlerBehavior.Separated) has one report per handler, each
    /// telling its own queue's envelopes apart.
    /// </summary>
    bool Reports(Envelope envelope) => envelope.Message?.GetType() == MessageType;

    /// <summary>Logs and counts the last failure of <paramref name="envelope"/>, <paramref name="exception"/>, just before it is dead-lettered.</summary>
    void DeadLettered(Envelope envelope, Exception exception);
}
