using Marten;
using Mediator;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Wolverine;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using ModularChat.BuildingBlocks.Caching;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;
using ModularChat.Conversations.Features.GetContext;

namespace ModularChat.Conversations.Features.DeleteConversation;

internal sealed record DeleteConversation(Guid ConversationId) : ICommand;

/// <summary>
/// Deletes a conversation for the client at once: its views go in the same transaction and
/// <see cref="ConversationDeleted"/> tells every other module to drop what it derived from it.
/// </summary>
internal sealed class DeleteConversationHandler(TenantSessions sessions, TimeProvider clock, CacheGenerations generations)
    : ICommandHandler<DeleteConversation>
{
    public async ValueTask<Unit> Handle(DeleteConversation command, CancellationToken cancellationToken)
    {
        await using var session = sessions.Write();
        var stream = await ConversationStreams.FetchForUpdate(session, command.ConversationId, expectedVersion: null, cancellationToken);
        stream.AppendOne(new ConversationDeleted(command.ConversationId, clock.GetUtcNow().TruncateToMicroseconds()));
        try
        {
            // Not cancelled by the client leaving: once the commit is sent, the caches must hear of it.
            await session.SaveChangesAsync(CancellationToken.None);
        }
        finally
        {
            // Also when the save failed after its commit (the outbox's delivery after it): the deletion may be stored. For a
            // conversation that is still there, forgetting its cached context costs one cache miss.
            await generations.ForgetAsync(ConversationContexts.Scope(sessions.TenantId, command.ConversationId));
            await generations.ForgetAsync(ConversationContexts.SummaryScope(sessions.TenantId, command.ConversationId));
        }

        return Unit.Value;
    }
}

internal static class DeleteConversationEndpoint
{
    public static void MapDeleteConversation(this IEndpointRouteBuilder group) =>
        group.MapDelete("/{id}", async Task<NoContent> (Guid id, ISender sender, CancellationToken ct) =>
            {
                await sender.Send(new DeleteConversation(id), ct);
                return TypedResults.NoContent();
            })
            .WithName("DeleteConversation")
            .WithSummary("Delete a conversation and everything derived from it")
            .ProducesProblem(StatusCodes.Status404NotFound);
}

/// <summary>
/// A deleted conversation's event stream, waiting to be removed from the database until every asynchronous projection
/// has read its last event.
/// </summary>
public sealed record PurgeDeletedConversation(Guid ConversationId, string TenantId, DateTimeOffset DeletedAt, int Attempt);

/// <summary>
/// After a conversation is deleted for the client, its event stream is removed from the database for good
/// (durably, off the request path; every other module drops what it derived on the same event).
/// </summary>
/// <remarks>
/// Not at once: the deletion's own event (and any appends just before it) may not be read yet by Marten's asynchronous
/// daemon (<see cref="DaemonProgress"/>). So the purge waits, re-checking with a growing delay, until every asynchronous
/// projection has read the stream's last event, or at most <see cref="ConversationsOptions.PurgeMaxWait"/> (then the daemon skips
/// the gap, once).
/// </remarks>
public static class PurgeDeletedConversationHandler
{
    public static Task Handle(
        ConversationDeleted deleted, Envelope envelope, IDocumentStore store, IMessageBus bus, TimeProvider clock,
        IOptions<ConversationsOptions> options, ILogger<PurgeDeletedConversation> logger, CancellationToken cancellationToken)
        => envelope.TenantId is { Length: > 0 } tenant
            ? Handle(new PurgeDeletedConversation(deleted.ConversationId, tenant, deleted.DeletedAt, Attempt: 0),
                store, bus, clock, options, logger, cancellationToken)
            : Task.CompletedTask;

    public static async Task Handle(
        PurgeDeletedConversation purge, IDocumentStore store, IMessageBus bus, TimeProvider clock,
        IOptions<ConversationsOptions> options, ILogger<PurgeDeletedConversation> logger, CancellationToken cancellationToken)
    {
        var check = await DaemonProgress.RemoveStreamAsync(store, purge.TenantId, purge.ConversationId, purge.DeletedAt, options.Value.PurgeMaxWait, clock, cancellationToken);
        if (check.Wait)
        {
            await bus.ScheduleAsync(purge with { Attempt = purge.Attempt + 1 }, DaemonProgress.RecheckDelay(purge.Attempt),
                new DeliveryOptions { TenantId = purge.TenantId });
        }
        else if (check.Unread)
        {
            logger.LogWarning(
                "Purged deleted conversation {ConversationId} after {Waited} although the slowest asynchronous projection ({Slowest}) had not read its last event ({Last}): the daemon may pause on the gap before it skips it",
                purge.ConversationId, check.Waited, check.SlowestProjection, check.LastEvent);
        }
    }
}
