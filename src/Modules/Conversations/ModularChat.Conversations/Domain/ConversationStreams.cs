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
    {
        EnsureCanExist(conversationId);
        return Writable(await session.Events.FetchForExclusiveWriting<Conversation>(conversationId, cancellationToken), conversationId, expectedVersion);
    }

    /// <summary>
    /// The nil id is never a conversation's (ids are made by the service, and Marten refuses a stream under it): it is
    /// not found, before anything asks Marten for it.
    /// </summary>
    /// <exception cref="NotFoundException">The id is <see cref="Guid.Empty"/>.</exception>
    public static void EnsureCanExist(Guid conversationId)
    {
        if (conversationId == Guid.Empty)
        {
            throw new NotFoundException("Conversation", conversationId);
        }
    }

    /// <summary>
    /// The stream, if the conversation exists for this tenant and is at <paramref name="expectedVersion"/> when one is given.
    /// </summary>
    /// <exception cref="NotFoundException">No such conversation for this tenant (or it was deleted).</exception>
    /// <exception cref="ConflictException">The conversation is at another version than expected.</exception>
    public static IEventStream<Conversation> Writable(IEventStream<Conversation> stream, Guid conversationId, long? expectedVersion)
    {
        EnsureWritable(stream.Aggregate, stream.Aggregate?.ClientVersion ?? 0, conversationId, expectedVersion);
        return stream;
    }

    /// <summary>Throws unless the conversation exists and is at <paramref name="expectedVersion"/> (when one is given).</summary>
    /// <param name="version">The conversation's version, including what the same transaction already decided to append.</param>
    /// <exception cref="NotFoundException">No such conversation for this tenant (or it was deleted).</exception>
    /// <exception cref="ConflictException">The conversation is at another version than expected.</exception>
    public static void EnsureWritable(Conversation? conversation, long version, Guid conversationId, long? expectedVersion)
    {
        if (conversation is null)
        {
            throw new NotFoundException("Conversation", conversationId);
        }

        if (expectedVersion is { } expected && expected != version)
        {
            throw new ConflictException(
                $"The conversation is at version {version}, not the expected {expected}: read it again and retry.",
                new Dictionary<string, object?> { ["currentVersion"] = version, ["expectedVersion"] = expected });
        }
    }
}
