using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Jobs;
using Wolverine;

namespace ModularChat.Summaries.Features.RequestSummary;

/// <summary>The answer to a summary request.</summary>
/// <param name="UpToSequence">The job will cover at least this message (the latest when the request was made).</param>
/// <param name="CoveredTo">What the current summary covers.</param>
/// <param name="Queued">False when the summary already covers every message (or there are none): nothing to do.</param>
public sealed record SummaryRequested(Guid ConversationId, long UpToSequence, long CoveredTo, bool Queued);

internal sealed record RequestSummary(Guid ConversationId) : ICommand<SummaryRequested>;

/// <summary>Queues a summary of everything not covered yet, now (no milestone, no minimum interval); the job runs in the background.</summary>
internal sealed class RequestSummaryHandler(TenantSessions sessions, IConversationMessages conversations, IMessageBus bus)
    : ICommandHandler<RequestSummary, SummaryRequested>
{
    public async ValueTask<SummaryRequested> Handle(RequestSummary command, CancellationToken cancellationToken)
    {
        var tenant = sessions.TenantId;
        var conversation = await conversations.FindAsync(tenant, command.ConversationId, cancellationToken)
            ?? throw new NotFoundException("Conversation", command.ConversationId);
        await using var session = sessions.Query();
        var progress = await session.LoadAsync<SummaryProgress>(command.ConversationId, cancellationToken);
        var covered = progress?.CoveredTo ?? 0;
        var queue = conversation.MessageCount > covered;
        if (queue)
        {
            await bus.PublishAsync(
                new SummarizeConversation(command.ConversationId, conversation.MessageCount, SummaryStrategy.Manual),
                new DeliveryOptions { TenantId = tenant });
        }

        return new SummaryRequested(command.ConversationId, conversation.MessageCount, covered, queue);
    }
}

internal static class RequestSummaryEndpoint
{
    public static void MapRequestSummary(this IEndpointRouteBuilder group) =>
        group.MapPost("/{id}/summary", async Task<Accepted<SummaryRequested>> (Guid id, ISender sender, CancellationToken ct)
                => TypedResults.Accepted($"/api/conversations/{id}/summary", await sender.Send(new RequestSummary(id), ct)))
            .WithName("RequestSummary")
            .WithSummary("Request a summary now")
            .WithDescription("Queues a revision covering every message so far, without waiting for the next milestone; it is written in the " +
                             "background (poll GET .../summary). queued=false when the summary already covers every message.")
            .ProducesProblem(StatusCodes.Status404NotFound);
}
