using FluentValidation;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Tenancy;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Features.GetContext;

internal sealed record GetContext(Guid ConversationId, int? MaxTokens, string? Query) : IQuery<ConversationContext>;

internal sealed class GetContextValidator : AbstractValidator<GetContext>
{
    public GetContextValidator(IOptions<ContextOptions> options)
    {
        RuleFor(q => q.MaxTokens).InclusiveBetween(1, options.Value.MaxMaxTokens)
            .WithMessage($"'maxTokens' must be between 1 and {options.Value.MaxMaxTokens}.");
        RuleFor(q => q.Query).Must(q => q is null || (q.Trim().Length > 0 && q.Length <= 2000))
            .WithMessage("'query' must be 1 to 2000 characters when given.");
    }
}

internal sealed class GetContextHandler(IConversationContexts contexts, TenantContext tenant, IOptions<ContextOptions> options)
    : IQueryHandler<GetContext, ConversationContext>
{
    public async ValueTask<ConversationContext> Handle(GetContext query, CancellationToken cancellationToken)
        => await contexts.GetAsync(tenant.TenantId, query.ConversationId, query.MaxTokens ?? options.Value.DefaultMaxTokens, query.Query, cancellationToken)
            ?? throw new NotFoundException("Conversation", query.ConversationId);
}

internal static class GetContextEndpoint
{
    public static void MapGetContext(this IEndpointRouteBuilder group) =>
        group.MapGet("/{id}/context", async Task<Ok<ConversationContext>> (Guid id, int? maxTokens, string? query, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new GetContext(id, maxTokens, query), ct)))
            .WithName("GetContext")
            .WithSummary("What to send the model for the next turn: summary + the most recent messages within maxTokens")
            .WithDescription("Messages come oldest first; totalTokens (o200k, with Context:TokensPerMessage per message) never exceeds maxTokens. With query, the best matching earlier messages are added as searchHits when the Search module is present.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound);
}
