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

namespace ModularChat.Conversations.Features.StartConversation;

/// <summary>Body of <c>POST /api/conversations</c>.</summary>
public sealed record StartConversationRequest(string? Title, Dictionary<string, string>? Metadata);

internal sealed record StartConversation(string? Title, Dictionary<string, string>? Metadata) : ICommand<ConversationResponse>;

internal sealed class StartConversationValidator : AbstractValidator<StartConversation>
{
    public StartConversationValidator(IOptions<ConversationsOptions> options)
    {
        ConversationRules.Title(RuleFor(c => c.Title), options.Value);
        ConversationRules.Metadata(RuleFor(c => c.Metadata), options.Value);
    }
}

internal sealed class StartConversationHandler(TenantSessions sessions, TimeProvider clock)
    : ICommandHandler<StartConversation, ConversationResponse>
{
    public const string DefaultTitle = "New conversation";

    public async ValueTask<ConversationResponse> Handle(StartConversation command, CancellationToken cancellationToken)
    {
        var id = Guid.CreateVersion7();
        var started = new ConversationStarted(
            id,
            string.IsNullOrWhiteSpace(command.Title) ? DefaultTitle : command.Title.Trim(),
            command.Metadata ?? [],
            clock.GetUtcNow().TruncateToMicroseconds());

        await using var session = sessions.Write();
        session.Events.StartStream<Conversation>(id, started);
        await session.SaveChangesAsync(cancellationToken);

        return ConversationResponse.From(Conversation.Create(started) with { Version = 1 });
    }
}

internal static class StartConversationEndpoint
{
    public static void MapStartConversation(this IEndpointRouteBuilder group) =>
        group.MapPost("/", async Task<Created<ConversationResponse>> (StartConversationRequest? body, ISender sender, CancellationToken ct) =>
            {
                var created = await sender.Send(new StartConversation(body?.Title, body?.Metadata), ct);
                return TypedResults.Created($"/api/conversations/{created.Id}", created);
            })
            .WithName("StartConversation")
            .WithSummary("Start a conversation")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity);
}
