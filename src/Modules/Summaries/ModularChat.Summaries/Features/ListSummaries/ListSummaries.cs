using System.Globalization;
using FluentValidation;
using Marten;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Paging;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Conversations.Contracts;
using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Features.ListSummaries;

/// <summary>A conversation's summary revisions, newest first, keyset-paged on the revision number.</summary>
internal sealed record ListSummaries(Guid ConversationId, string? Cursor, int? Limit) : IQuery<Page<SummaryResponse>>;

internal sealed class ListSummariesValidator : AbstractValidator<ListSummaries>
{
    public ListSummariesValidator(IOptions<SummariesOptions> options)
        => RuleFor(q => q.Limit).InclusiveBetween(1, options.Value.MaxPageSize)
            .WithMessage($"'limit' must be between 1 and {options.Value.MaxPageSize}.");
}

internal sealed class ListSummariesHandler(TenantSessions sessions, IConversationMessages conversations, ITokenCounter tokens, IOptions<SummariesOptions> options)
    : IQueryHandler<ListSummaries, Page<SummaryResponse>>
{
    private const string CursorKind = "sumrev";

    public async ValueTask<Page<SummaryResponse>> Handle(ListSummaries query, CancellationToken cancellationToken)
    {
        var scope = CursorScope.Of(("conversation", query.ConversationId.ToString("N")));
        var before = query.Cursor is null ? (int?)null : DecodeCursor(query.Cursor, scope);
        if (await conversations.FindAsync(sessions.TenantId, query.ConversationId, cancellationToken) is null)
        {
            throw new NotFoundException("Conversation", query.ConversationId);
        }

        var limit = query.Limit ?? options.Value.DefaultPageSize;
        await using var session = sessions.Query();
        var revisions = session.Query<SummaryRevisionView>().Where(r => r.ConversationId == query.ConversationId);
        if (before is { } b)
        {
            revisions = revisions.Where(r => r.Revision < b);
        }

        var items = await revisions.OrderByDescending(r => r.Revision).Take(limit + 1).ToListAsync(cancellationToken);
        string? next = null;
        if (items.Count > limit)
        {
            items = items.Take(limit).ToList();
            next = Cursor.Encode(CursorKind, scope, items[^1].Revision.ToString(CultureInfo.InvariantCulture));
        }

        return new Page<SummaryResponse>(items.Select(r => SummaryResponse.From(r.Summary, tokens)).ToList(), next);
    }

    private static int DecodeCursor(string cursor, CursorScope scope)
        => int.TryParse(Cursor.Decode(cursor, CursorKind, scope, 1)[0], NumberStyles.None, CultureInfo.InvariantCulture, out var revision) && revision > 0
            ? revision
            : throw Cursor.Invalid();
}

internal static class ListSummariesEndpoint
{
    public static void MapListSummaries(this IEndpointRouteBuilder group) =>
        group.MapGet("/{id}/summaries", async Task<Ok<Page<SummaryResponse>>> (Guid id, string? cursor, int? limit, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new ListSummaries(id, cursor, limit), ct)))
            .WithName("ListSummaries")
            .WithSummary("List a conversation's summary revisions, newest first")
            .WithDescription("Every revision with its provenance (covered range, reason, summarizer, model, prompt version, variant, tokens, duration). " +
                             "Pass nextCursor as cursor to read older ones.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound);
}
