using Wolverine;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>
/// A module's own entry and count for a message of <see cref="MessageType"/> that <see cref="DatabaseOutages"/> moves to the
/// dead-letter store after <c>Messaging:MaxAttemptsWhileDatabaseAnswers</c> failures while the database answered, in place
/// of the rule's generic error, which names only the message type and the envelope: the module knows what the message was
/// about (a tenant, conversations), what brings it back, and counts it with the messages it gives up itself. Registered in
/// the services as a singleton, at most one per message type; a message type without one keeps the generic error.
/// </summary>
public interface IDeadLetterReport
{
    /// <summary>The type of the envelope's message this reports (exactly: a batch's is the array type).</summary>
    Type MessageType { get; }

    /// <summary>Logs and counts the last failure of <paramref name="envelope"/>, <paramref name="exception"/>, just before it is dead-lettered.</summary>
    void DeadLettered(Envelope envelope, Exception exception);
}
