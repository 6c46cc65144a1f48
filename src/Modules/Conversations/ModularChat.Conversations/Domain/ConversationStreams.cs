using Marten;
using JasperFx.Events;
using ModularChat.BuildingBlocks.Errors;

namespace ModularChat.Conversations.Domain;

internal static class ConversationStreams
{
    /// <summary>
    /// Fetches a conversation for appending, holding its stream's row lock until the session
    /// commits: concurrent writers to one conversation queue up instead of failing, so every
    /// message gets the next sequence exactly once. <paramref name="expectedVersion"/>, when
    /// given, must match the current version (409 otherwise).
    /// </summary>
    public static async Task<IEventStream<Conversation>> FetchForUpdate(
        IDocumentSession session, Guid conversationId, long? expectedVersion, CancellationToken cancellationToken)
    {
        var stream = await session.Events.FetchForExclusiveWriting<Conversation>(conversationId, cancellationToken);
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
