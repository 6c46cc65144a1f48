using Microsoft.AspNetCore.Http.HttpResults;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Paging;
using ModularChat.BuildingBlocks.Security;
using ModularChat.Host.Infrastructure;

namespace ModularChat.Host.DeadLetters;

/// <summary>A page of dead letters, oldest failure first.</summary>
public sealed record DeadLetterPage(IReadOnlyList<DeadLetterView> Items, string? NextCursor);

/// <summary>
/// Body of the replay request: the letters to queue again (<c>ids</c>; an empty list queues none), or, without
/// <c>ids</c>, every letter the filters choose (no filter: every letter).
/// </summary>
public sealed record ReplayDeadLettersRequest(List<Guid>? Ids, string? MessageType, string? ExceptionType, string? Tenant);

/// <summary>Body of the discard request: the letters to delete for good.</summary>
public sealed record DiscardDeadLettersRequest(List<Guid>? Ids);

/// <summary>How many letters were queued again.</summary>
public sealed record DeadLettersReplayed(int Replayed);

/// <summary>How many letters were deleted.</summary>
public sealed record DeadLettersDiscarded(int Discarded);

/// <summary>The operators' view of the dead-letter store: <c>/api/admin/dead-letters</c> (operator role).</summary>
internal static class DeadLettersEndpoints
{
    public const string Path = "/api/admin/dead-letters";

    /// <summary>The longest filter value taken (a message or exception type's name, a tenant's id is at most 256).</summary>
    private const int MaxFilterLength = 1000;

    // The cursor holds the page's last letter (when it failed, its id), bound to the filters it was issued for.
    private const string CursorKind = "deadltr";

    public static IServiceCollection AddModularChatDeadLetters(this IServiceCollection services)
        => services.AddSingleton<DeadLetterAdmin>();

    public static void MapModularChatDeadLetters(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup(Path)
            .RefuseRepeatedQueryValues()
            .RequireAuthorization(Policies.Operator)
            .WithTags("Operations");

        group.MapGet("", async Task<Ok<DeadLetterPage>> (
                    string? messageType, string? exceptionType, string? tenant, string? cursor, int? limit, DeadLetterAdmin admin, CancellationToken ct) =>
                {
                    var criteria = Criteria(messageType, exceptionType, tenant);
                    var size = limit ?? DeadLetterAdmin.DefaultPageSize;
                    if (size is < 1 or > DeadLetterAdmin.MaxPageSize)
                    {
                        throw new BadRequestException("limit", $"'limit' must be between 1 and {DeadLetterAdmin.MaxPageSize}.");
                    }

                    var scope = CursorScope.Of(("messageType", messageType ?? ""), ("exceptionType", exceptionType ?? ""), ("tenant", tenant ?? ""));
                    var after = cursor is null ? (DeadLetterPosition?)null : Position(Cursor.DecodeMoment(cursor, CursorKind, scope));
                    var (items, next) = await admin.ListAsync(criteria, after, size, ct);
                    return TypedResults.Ok(new DeadLetterPage(items, next is { } n ? Cursor.EncodeMoment(CursorKind, scope, n.At, n.Id) : null));
                })
            .WithName("ListDeadLetters")
            .WithSummary("List every tenant's dead-lettered background messages (operator role)")
            .WithDescription("Oldest failure first. Filters: messageType and exceptionType (full .NET names, exact), tenant (the tenant the " +
                             "message was sent for). Each letter names its queue, tenant, exception, attempts and replays; message bodies are not shown.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status401Unauthorized)
            .ProducesProblem(StatusCodes.Status403Forbidden);

        group.MapPost("/replay", async Task<Accepted<DeadLettersReplayed>> (ReplayDeadLettersRequest? body, DeadLetterAdmin admin, CancellationToken ct) =>
                {
                    var criteria = Criteria(body?.MessageType, body?.ExceptionType, body?.Tenant);
                    if (body?.Ids is { } ids)
                    {
                        CheckIds(ids);
                        if (criteria != new DeadLetterCriteria())
                        {
                            throw new BadRequestException("ids", "Send either 'ids' or filters (messageType, exceptionType, tenant), not both.");
                        }
                    }

                    var replayed = await admin.ReplayAsync(body?.Ids?.Distinct().ToList(), criteria, ct);
                    return TypedResults.Accepted(Path, new DeadLettersReplayed(replayed));
                })
            .WithName("ReplayDeadLetters")
            .WithSummary("Queue dead letters again (operator role)")
            .WithDescription("Body {ids: [...]} replays those letters ({ids: []} none); without ids, every letter the filters messageType, " +
                             "exceptionType and tenant choose (an empty body: every letter). Each goes back to the queue it failed in and is " +
                             "handled as new within a few seconds (the next durability check of a node). The background messages are made to be " +
                             "handled again: one whose work was done meanwhile does nothing.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status401Unauthorized)
            .ProducesProblem(StatusCodes.Status403Forbidden);

        group.MapPost("/discard", async Task<Ok<DeadLettersDiscarded>> (DiscardDeadLettersRequest? body, DeadLetterAdmin admin, CancellationToken ct) =>
                {
                    if (body?.Ids is not { Count: > 0 } ids)
                    {
                        throw new BadRequestException("ids", "Name the letters to discard in 'ids' (at least one): a discarded letter's work is not done.");
                    }

                    CheckIds(ids);
                    return TypedResults.Ok(new DeadLettersDiscarded(await admin.DiscardAsync(ids.Distinct().ToList(), ct)));
                })
            .WithName("DiscardDeadLetters")
            .WithSummary("Delete dead letters for good (operator role)")
            .WithDescription("Body {ids: [...]}: those letters are deleted, and what they were to do stays undone (see README, Dead-lettered " +
                             "messages, for what brings each kind back).")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status401Unauthorized)
            .ProducesProblem(StatusCodes.Status403Forbidden);
    }

    private static DeadLetterCriteria Criteria(string? messageType, string? exceptionType, string? tenant)
    {
        CheckFilter("messageType", messageType);
        CheckFilter("exceptionType", exceptionType);
        CheckFilter("tenant", tenant);
        return new DeadLetterCriteria(messageType, exceptionType, tenant);
    }

    private static void CheckFilter(string name, string? value)
    {
        if (value is null)
        {
            return;
        }

        if (string.IsNullOrWhiteSpace(value))
        {
            throw new BadRequestException(name, $"'{name}' must not be empty: leave it out to take any.");
        }

        if (value.Length > MaxFilterLength)
        {
            throw new BadRequestException(name, $"'{name}' must be at most {MaxFilterLength} characters.");
        }
    }

    private static void CheckIds(List<Guid> ids)
    {
        if (ids.Count > DeadLetterAdmin.MaxPageSize)
        {
            throw new BadRequestException("ids", $"'ids' may name at most {DeadLetterAdmin.MaxPageSize} letters; send the rest in further requests.");
        }
    }

    private static DeadLetterPosition Position((DateTimeOffset At, Guid Id) moment) => new(moment.At, moment.Id);
}
