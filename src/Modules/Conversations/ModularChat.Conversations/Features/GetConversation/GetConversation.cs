using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations.Features.GetConversation;

internal sealed record GetConversation(Guid ConversationId) : IQuery<ConversationResponse>;

internal sealed class GetConversationHandler(TenantSessions sessions) : IQueryHandler<GetConversation, ConversationResponse>
{
    public async ValueTask<ConversationResponse> Handle(GetConversation query, CancellationToken cancellationToken)
    {
        await using var session = sessions.Query();
        var conversation = await session.LoadAsync<Conversation>(query.ConversationId, cancellationToken)
            ?? throw new NotFoundException("Conversation", query.ConversationId);
        return ConversationResponse.From(conversation);
    }
}

internal static class GetConversationEndpoint
{
    public static void MapGetConversation(this IEndpointRouteBuilder group) =>
        group.MapGet("/{id}", async Task<Ok<ConversationResponse>> (Guid id, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new GetConversation(id), ct)))
            .WithName("GetConversation")
            .WithSummary("Get a conversation")
            .ProducesProblem(StatusCodes.Status404NotFound);
}
