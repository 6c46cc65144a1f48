using FluentValidation;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations.Features.RenameConversation;

/// <summary>Body of <c>PATCH /api/conversations/{id}</c>.</summary>
/// <param name="Title">The new title.</param>
/// <param name="ExpectedVersion">When given, the rename only applies if the conversation is still at this version (409 otherwise).</param>
public sealed record RenameConversationRequest(string? Title, long? ExpectedVersion);

internal sealed record RenameConversation(Guid ConversationId, string? Title, long? ExpectedVersion) : ICommand<ConversationResponse>;

internal sealed class RenameConversationValidator : AbstractValidator<RenameConversation>
{
    public RenameConversationValidator(IOptions<ConversationsOptions> options)
    {
        RuleFor(c => c.Title).Must(t => !string.IsNullOrWhiteSpace(t)).WithMessage("'title' is required.");
        ConversationRules.Title(RuleFor(c => c.Title), options.Value);
        RuleFor(c => c.ExpectedVersion).GreaterThan(0).WithMessage("'expectedVersion' must be positive.");
    }
}

internal sealed class RenameConversationHandler(TenantSessions sessions, TimeProvider clock)
    : ICommandHandler<RenameConversation, ConversationResponse>
{
    public async ValueTask<ConversationResponse> Handle(RenameConversation command, CancellationToken cancellationToken)
    {
        await using var session = sessions.Write();
        var stream = await ConversationStreams.FetchForUpdate(session, command.ConversationId, command.ExpectedVersion, cancellationToken);
        var renamed = new ConversationRenamed(command.ConversationId, command.Title!.Trim(), clock.GetUtcNow().TruncateToMicroseconds());
        stream.AppendOne(renamed);
        await session.SaveChangesAsync(cancellationToken);
        return ConversationResponse.From(stream.Aggregate!.Apply(renamed) with { Version = stream.Aggregate.Version + 1 });
    }
}

internal static class RenameConversationEndpoint
{
    public static void MapRenameConversation(this IEndpointRouteBuilder group) =>
        group.MapPatch("/{id}", async Task<Ok<ConversationResponse>> (Guid id, RenameConversationRequest body, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new RenameConversation(id, body.Title, body.ExpectedVersion), ct)))
            .WithName("RenameConversation")
            .WithSummary("Rename a conversation")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict);
}
