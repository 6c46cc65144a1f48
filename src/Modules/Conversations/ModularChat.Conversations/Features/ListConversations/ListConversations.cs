using FluentValidation;
using Marten;
using Marten.Linq.MatchesSql;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Paging;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations.Features.ListConversations;

/// <summary>Newest activity first, keyset-paged on (last activity, id).</summary>
/// <param name="Metadata">Filters, "key=value" (split at the first '='): only conversations whose metadata has every one.</param>
internal sealed record ListConversations(string? Cursor, int? Limit, string[]? Metadata = null) : IQuery<Page<ConversationResponse>>;

internal sealed class ListConversationsValidator : AbstractValidator<ListConversations>
{
    public ListConversationsValidator(IOptions<ConversationsOptions> options)
    {
        var o = options.Value;
        RuleFor(q => q.Limit).InclusiveBetween(1, o.MaxPageSize)
            .WithMessage($"'limit' must be between 1 and {o.MaxPageSize}.");
        // A conversation holds at most MaxMetadataEntries entries, so more filters could never all match.
        this.KeyValueFilterRules(q => q.Metadata, "metadata", o.MaxMetadataEntries, "userId=42", "Conversations:MaxMetadataEntries");
    }
}

internal sealed class ListConversationsHandler(TenantSessions sessions, IOptions<ConversationsOptions> options)
    : IQueryHandler<ListConversations, Page<ConversationResponse>>
{
    private const string CursorKind = "conv";

    public async ValueTask<Page<ConversationResponse>> Handle(ListConversations query, CancellationToken cancellationToken)
    {
        var limit = query.Limit ?? options.Value.DefaultPageSize;
        await using var session = sessions.Query();
        var conversations = session.Query<Conversation>().WithMetadata(KeyValueFilters.Pairs(query.Metadata));
        // Every filter must match, so their order and repeats do not change the list.
        var scope = CursorScope.Of([.. (query.Metadata ?? []).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).Select(f => ("metadata", f))]);
        if (query.Cursor is not null)
        {
            var (activity, id) = Cursor.DecodeMoment(query.Cursor, CursorKind, scope);
            conversations = conversations.Where(c => c.MatchesSql("(d.last_activity_at, d.id) < (?, ?)", activity, id));
        }

        var items = await conversations
            .OrderByDescending(c => c.LastActivityAt).ThenByDescending(c => c.Id)
            .Take(limit + 1)
            .ToListAsync(cancellationToken);

        string? next = null;
        if (items.Count > limit)
        {
            items = items.Take(limit).ToList();
            var last = items[^1];
            next = Cursor.EncodeMoment(CursorKind, scope, last.LastActivityAt, last.Id);
        }

        return new Page<ConversationResponse>(items.Select(ConversationResponse.From).ToList(), next);
    }
}

internal static class ListConversationsEndpoint
{
    public static void MapListConversations(this IEndpointRouteBuilder group) =>
        group.MapGet("/", async Task<Ok<Page<ConversationResponse>>> (string? cursor, int? limit, string[]? metadata, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new ListConversations(cursor, limit, metadata), ct)))
            .WithName("ListConversations")
            .WithSummary("List conversations, most recently active first")
            .WithDescription("Pass the previous page's nextCursor as cursor to read on, with the same metadata filters (a cursor sent with other filters is a 400); nextCursor is null on the last page. " +
                             "metadata=key=value (repeatable) keeps only the conversations whose metadata has every pair (exact, case-sensitive).")
            .ProducesValidationProblem();
}
