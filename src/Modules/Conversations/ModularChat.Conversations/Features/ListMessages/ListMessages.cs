using System.Globalization;
using FluentValidation;
using Marten;
using Marten.Services.BatchQuerying;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Paging;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations.Features.ListMessages;

/// <summary>Which way a message page reads.</summary>
public enum PageDirection
{
    /// <summary>Oldest first, starting at the first message.</summary>
    Forward,

    /// <summary>Newest first, starting at the latest message.</summary>
    Backward,
}

internal sealed record ListMessages(Guid ConversationId, string? Cursor, int? Limit, string? Direction, bool IncludeArchived = false)
    : IQuery<Page<MessageResponse>>;

internal sealed class ListMessagesValidator : AbstractValidator<ListMessages>
{
    public ListMessagesValidator(IOptions<ConversationsOptions> options)
    {
        RuleFor(q => q.Limit).InclusiveBetween(1, options.Value.MaxPageSize)
            .WithMessage($"'limit' must be between 1 and {options.Value.MaxPageSize}.");
        RuleFor(q => q.Direction).Must(d => d is null || EnumNames.TryParse<PageDirection>(d, out _))
            .WithMessage("'direction' must be 'forward' or 'backward'.");
    }
}

internal sealed class ListMessagesHandler(TenantSessions sessions, IOptions<ConversationsOptions> options)
    : IQueryHandler<ListMessages, Page<MessageResponse>>
{
    private const string CursorKind = "msg";

    public async ValueTask<Page<MessageResponse>> Handle(ListMessages query, CancellationToken cancellationToken)
    {
        var limit = query.Limit ?? options.Value.DefaultPageSize;
        var asked = query.Direction is null ? (PageDirection?)null : EnumNames.Parse<PageDirection>(query.Direction);
        var scope = CursorScope.Of(("conversation", query.ConversationId.ToString("N")), ("includeArchived", query.IncludeArchived ? "true" : "false"));
        var (direction, after) = query.Cursor is null ? (asked ?? PageDirection.Forward, (long?)null) : DecodeCursor(query.Cursor, scope);
        if (asked is { } given && given != direction)
        {
            // A cursor goes on the way its page went; a client that sends it with the other direction has mixed two walks.
            throw new BadRequestException("direction",
                $"'direction' is '{Name(given)}' but the cursor continues {Name(direction)}: leave 'direction' out with a cursor, or start again without one.");
        }

        await using var session = sessions.Query();
        var batch = session.CreateBatchQuery();
        var conversation = batch.Load<Conversation>(query.ConversationId);
        var hot = Page(batch.Query<StoredMessage>().Where(m => m.ConversationId == query.ConversationId), direction, after, limit);
        var archived = query.IncludeArchived
            ? Page(batch.Query<ArchivedMessage>().Where(m => m.ConversationId == query.ConversationId), direction, after, limit)
            : Task.FromResult<IReadOnlyList<ArchivedMessage>>([]);
        await batch.Execute(cancellationToken);

        if (await conversation is null)
        {
            throw new NotFoundException("Conversation", query.ConversationId);
        }

        // Archived messages all come before the hot ones: merge the two pages in reading order. The two reads are separate
        // statements: one message that retention moved between them is in both (never in neither: the hot one is read first).
        var merged = (await archived).Select(a => a.ToStored()).Concat(await hot);
        var list = (direction == PageDirection.Forward ? merged.OrderBy(m => m.Sequence) : merged.OrderByDescending(m => m.Sequence))
            .DistinctBy(m => m.Sequence)
            .Take(limit + 1)
            .ToList();
        string? next = null;
        if (list.Count > limit)
        {
            list.RemoveAt(list.Count - 1);
            next = Cursor.Encode(CursorKind, scope, direction == PageDirection.Forward ? "f" : "b", list[^1].Sequence.ToString(CultureInfo.InvariantCulture));
        }

        return new Page<MessageResponse>(list.Select(MessageResponse.From).ToList(), next);
    }

    // Two copies of one paging rule: Marten translates member access on the concrete document type only.
    private static Task<IReadOnlyList<StoredMessage>> Page(IBatchedQueryable<StoredMessage> messages, PageDirection direction, long? after, int limit)
    {
        var filtered = (direction, after) switch
        {
            (PageDirection.Forward, { } seq) => messages.Where(m => m.Sequence > seq),
            (PageDirection.Backward, { } seq) => messages.Where(m => m.Sequence < seq),
            _ => messages,
        };
        return (direction == PageDirection.Forward ? filtered.OrderBy(m => m.Sequence) : filtered.OrderByDescending(m => m.Sequence)).Take(limit + 1).ToList();
    }

    private static Task<IReadOnlyList<ArchivedMessage>> Page(IBatchedQueryable<ArchivedMessage> messages, PageDirection direction, long? after, int limit)
    {
        var filtered = (direction, after) switch
        {
            (PageDirection.Forward, { } seq) => messages.Where(m => m.Sequence > seq),
            (PageDirection.Backward, { } seq) => messages.Where(m => m.Sequence < seq),
            _ => messages,
        };
        return (direction == PageDirection.Forward ? filtered.OrderBy(m => m.Sequence) : filtered.OrderByDescending(m => m.Sequence)).Take(limit + 1).ToList();
    }

    private static string Name(PageDirection direction) => direction == PageDirection.Forward ? "forward" : "backward";

    private static (PageDirection, long?) DecodeCursor(string cursor, CursorScope scope)
    {
        var fields = Cursor.Decode(cursor, CursorKind, scope, 2);
        var direction = fields[0] switch
        {
            "f" => PageDirection.Forward,
            "b" => PageDirection.Backward,
            _ => throw Cursor.Invalid(),
        };
        return long.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var sequence) && sequence >= 0
            ? (direction, sequence)
            : throw Cursor.Invalid();
    }
}

internal sealed record GetMessage(Guid ConversationId, long Sequence, bool IncludeArchived = false) : IQuery<MessageResponse>;

internal sealed class GetMessageHandler(TenantSessions sessions) : IQueryHandler<GetMessage, MessageResponse>
{
    public async ValueTask<MessageResponse> Handle(GetMessage query, CancellationToken cancellationToken)
    {
        await using var session = sessions.Query();
        var message = await session.Query<StoredMessage>()
            .FirstOrDefaultAsync(m => m.ConversationId == query.ConversationId && m.Sequence == query.Sequence, cancellationToken);
        if (message is null && query.IncludeArchived)
        {
            message = (await session.Query<ArchivedMessage>()
                .FirstOrDefaultAsync(m => m.ConversationId == query.ConversationId && m.Sequence == query.Sequence, cancellationToken))?.ToStored();
        }

        return message is null
            ? throw new NotFoundException("Message", $"{query.ConversationId}/{query.Sequence}")
            : MessageResponse.From(message);
    }
}

internal static class ListMessagesEndpoints
{
    public static void MapListMessages(this IEndpointRouteBuilder group)
    {
        group.MapGet("/{id}/messages", async Task<Ok<Page<MessageResponse>>> (
                Guid id, string? cursor, int? limit, string? direction, bool? includeArchived, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new ListMessages(id, cursor, limit, direction, includeArchived ?? false), ct)))
            .WithName("ListMessages")
            .WithSummary("Page through a conversation's messages by sequence")
            .WithDescription("direction=forward (default) starts at the first message, oldest first; direction=backward starts at the latest, newest first. Pass nextCursor as cursor to continue the same way, with the same includeArchived (a cursor of another conversation or sent with another includeArchived is a 400). includeArchived=true also returns messages retention archived.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound);

        group.MapGet("/{id}/messages/{sequence}", async Task<Ok<MessageResponse>> (Guid id, long sequence, bool? includeArchived, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new GetMessage(id, sequence, includeArchived ?? false), ct)))
            .WithName("GetMessage")
            .WithSummary("Get one message by its sequence number")
            .ProducesProblem(StatusCodes.Status404NotFound);
    }
}
