using FluentValidation;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Tenancy;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Conversations.Contracts;
using ModularChat.Search.Embeddings;
using ModularChat.Search.Features.Search;
using ModularChat.Search.Searching;
using ModularChat.Search.Vectors;

namespace ModularChat.Search.Features.Related;

/// <summary>A conversation similar to the one asked about.</summary>
/// <param name="Score">Cosine similarity of the two conversations' centroids (-1 to 1, higher is closer).</param>
public sealed record RelatedConversation(Guid ConversationId, string Title, double Score);

/// <summary>The answer of <c>GET /api/conversations/{id}/related</c>.</summary>
public sealed record RelatedConversationsResponse(Guid ConversationId, string Model, IReadOnlyList<RelatedConversation> Related);

/// <param name="ConversationMetadata">Only conversations whose metadata has every pair ("key=value").</param>
internal sealed record FindRelatedConversations(Guid ConversationId, int? K, string[]? ConversationMetadata = null) : IQuery<RelatedConversationsResponse>;

internal sealed class FindRelatedConversationsValidator : AbstractValidator<FindRelatedConversations>
{
    public FindRelatedConversationsValidator(IOptions<SearchOptions> options)
    {
        var max = options.Value.MaxRelatedResults;
        RuleFor(q => q.K).GreaterThan(0).WithMessage("'k' must be at least 1.");
        RuleFor(q => q.K).LessThanOrEqualTo(max).WithMessage($"'k' may be at most {max}.").AsLimit();
        this.KeyValueFilterRules(q => q.ConversationMetadata, "conversationMetadata", SearchEntries.MaxMetadataFilters, "userId=42");
    }
}

/// <summary>
/// Compares conversations by their centroid: the mean of their messages' embeddings plus their latest summary's
/// (weighted by <see cref="SearchOptions.RelatedSummaryWeight"/>), over the tenant's own conversations only.
/// </summary>
internal sealed class FindRelatedConversationsHandler(
    TenantContext tenant, IConversationMessages conversations, ConversationMetadataScope scope, TenantEmbedders embedders, IVectorIndex vectors,
    IOptions<SearchOptions> options)
    : IQueryHandler<FindRelatedConversations, RelatedConversationsResponse>
{
    public async ValueTask<RelatedConversationsResponse> Handle(FindRelatedConversations query, CancellationToken cancellationToken)
    {
        var tenantId = tenant.TenantId;
        _ = await conversations.FindAsync(tenantId, query.ConversationId, cancellationToken)
            ?? throw new NotFoundException("Conversation", query.ConversationId);
        var k = query.K ?? 5;
        var among = query.ConversationMetadata is { Length: > 0 } filters
            ? (await scope.MatchingAsync(tenantId, filters, cancellationToken)).ToHashSet()
            : null;
        var embedder = await embedders.ForTenantAsync(tenantId, cancellationToken);
        // A few more than asked: conversations deleted since their vectors were read are skipped below.
        var scores = await vectors.RelatedAsync(tenantId, embedder.Model, query.ConversationId, k + 5, (float)options.Value.RelatedSummaryWeight,
            cancellationToken, among);
        var related = new List<RelatedConversation>(k);
        foreach (var score in scores)
        {
            if (related.Count == k)
            {
                break;
            }

            if (await conversations.FindAsync(tenantId, score.ConversationId, cancellationToken) is { } info)
            {
                related.Add(new RelatedConversation(info.ConversationId, info.Title, score.Score));
            }
        }

        return new RelatedConversationsResponse(query.ConversationId, embedder.Model, related);
    }
}

internal static class RelatedConversationsEndpoint
{
    public static void MapRelatedConversations(this IEndpointRouteBuilder group) =>
        group.MapGet("/{id}/related", async Task<Ok<RelatedConversationsResponse>> (Guid id, int? k, string[]? conversationMetadata, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new FindRelatedConversations(id, k, conversationMetadata), ct)))
            .WithName("RelatedConversations")
            .WithSummary("The caller's conversations most similar to this one")
            .WithDescription("By the embeddings of their messages and latest summaries; k defaults to 5. Conversations whose entries are not embedded yet are not compared. " +
                             "conversationMetadata=key=value (repeatable) compares only conversations whose metadata has every pair.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity);
}
