using JasperFx.Events;
using Marten;
using ModularChat.BuildingBlocks.Errors;

namespace ModularChat.Conversations.Domain;

internal static class ConversationStreams
{
    /// <summary>
    /// Fetches a conversation for a change, holding its stream's row lock until the session commits,
    /// so concurrent changes queue up instead of failing (renames and deletes are rare: no need to race).
    /// </summary>
    public static async Task<IEventStream<Conversation>> FetchForUpdate(
        IDocumentSession session, Guid conversationId, long? expectedVersion, CancellationToken cancellationToken)
        => Writable(await session.Events.FetchForExclusiveWriting<Conversation>(conversationId, cancellationToken), conversationId, expectedVersion);

    /// <summary>
    /// The stream, if the conversation exists for this tenant and is at <paramref name="expectedVersion"/> when one is given.
    /// </summary>
    /// <exception cref="NotFoundException">No such conversation for this tenant (or it was deleted).</exception>
    /// <exception cref="ConflictException">The conversation is at another version than expected.</exception>
    public static IEventStream<Conversation> Writable(IEventStream<Conversation> stream, Guid conversationId, long? expectedVersion)
    {
        if (stream.Aggregate is null)
        {
            throw new NotFoundException("Conversation", conversationId);
        }

        if (expectedVersion is { } expected && expected != stream.Aggregate.Version)
        {
            throw new ConflictException(
                $"The conversation is at version {stream.Aggregate.Version}, not the expected {expected}: read it again and retry.",
                new Dictionary<string, object?> { ["currentVersion"] = stream.Aggregate.Version, ["expectedVersion"] = expected });
        }

        return stream;
    }
}
