using Marten;
using Mediator;
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
        await session.SaveChangesAsync(cancellationToken);
        await generations.ForgetAsync(ConversationContexts.Scope(sessions.TenantId, command.ConversationId));
        await generations.ForgetAsync(ConversationContexts.SummaryScope(sessions.TenantId, command.ConversationId));
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
/// After a conversation is deleted for the client, its event stream is removed from the database for good
/// (durably, off the request path; every other module drops what it derived on the same event).
/// </summary>
public static class PurgeDeletedConversationHandler
{
    public static Task Handle(ConversationDeleted deleted, Envelope envelope, IDocumentStore store, CancellationToken cancellationToken)
        => envelope.TenantId is { Length: > 0 } tenant
            ? store.Advanced.Clean.DeleteSingleEventStreamAsync(deleted.ConversationId, tenant, cancellationToken)
            : Task.CompletedTask;
}
