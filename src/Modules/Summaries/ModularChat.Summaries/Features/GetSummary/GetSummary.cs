using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Features.GetSummary;

internal sealed record GetSummary(Guid ConversationId) : IQuery<CurrentSummaryResponse>;

internal sealed class GetSummaryHandler(TenantSessions sessions, IConversationMessages conversations, ITokenCounter tokens)
    : IQueryHandler<GetSummary, CurrentSummaryResponse>
{
    public async ValueTask<CurrentSummaryResponse> Handle(GetSummary query, CancellationToken cancellationToken)
    {
        var conversation = await conversations.FindAsync(sessions.TenantId, query.ConversationId, cancellationToken)
            ?? throw new NotFoundException("Conversation", query.ConversationId);
        await using var session = sessions.Query();
        var summary = await session.LoadAsync<SummaryView>(query.ConversationId, cancellationToken)
            ?? throw new NotFoundException("Summary", query.ConversationId);
        return new CurrentSummaryResponse(SummaryResponse.From(summary, tokens), conversation.MessageCount);
    }
}

internal static class GetSummaryEndpoint
{
    public static void MapGetSummary(this IEndpointRouteBuilder group) =>
        group.MapGet("/{id}/summary", async Task<Ok<CurrentSummaryResponse>> (Guid id, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new GetSummary(id), ct)))
            .WithName("GetSummary")
            .WithSummary("Get a conversation's current summary")
            .WithDescription("The latest revision with its provenance, and how many messages came after it. 404 until the first summary is written " +
                             "(at the first milestone, or on POST .../summary).")
            .ProducesProblem(StatusCodes.Status404NotFound);
}
