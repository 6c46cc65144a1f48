using FluentValidation;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Paging;
using ModularChat.BuildingBlocks.Tenancy;
using ModularChat.Summaries.Jobs;

namespace ModularChat.Summaries.Features.Failures;

/// <summary>A page of dead-lettered summarization jobs, oldest first.</summary>
/// <param name="Total">How many there are in all.</param>
public sealed record SummaryFailuresPage(IReadOnlyList<SummaryFailure> Items, int Total, string? NextCursor);

/// <summary>
/// Body of the replay request: the failures to queue again (an empty list queues none), or no <c>ids</c> (or no body) for all
/// of the caller's tenant.
/// </summary>
public sealed record ReplayFailuresRequest(List<Guid>? Ids);

/// <summary>How many failed jobs were queued again.</summary>
public sealed record FailuresReplayed(int Replayed);

internal sealed record ListSummaryFailures(string? Cursor, int? Limit) : IQuery<SummaryFailuresPage>;

internal sealed class ListSummaryFailuresValidator : AbstractValidator<ListSummaryFailures>
{
    public ListSummaryFailuresValidator(IOptions<SummariesOptions> options)
        => RuleFor(q => q.Limit).InclusiveBetween(1, options.Value.MaxPageSize)
            .WithMessage($"'limit' must be between 1 and {options.Value.MaxPageSize}.");
}

internal sealed class ListSummaryFailuresHandler(SummaryFailures failures, TenantContext tenant, IOptions<SummariesOptions> options)
    : IQueryHandler<ListSummaryFailures, SummaryFailuresPage>
{
    // The cursor holds the last failure of its page (when it failed, its id): the next page starts after it, wherever it is
    // now (failures replayed meanwhile leave the list), and may ask another limit.
    private const string CursorKind = "sumfailk";

    public async ValueTask<SummaryFailuresPage> Handle(ListSummaryFailures query, CancellationToken cancellationToken)
    {
        var after = query.Cursor is null ? ((DateTimeOffset, Guid)?)null : Cursor.DecodeMoment(query.Cursor, CursorKind, CursorScope.None);
        var limit = query.Limit ?? options.Value.DefaultPageSize;
        var (items, total, more) = await failures.ListAsync(tenant.TenantId, after, limit, cancellationToken);
        var next = more && items.Count > 0 && SummaryFailures.PageKey(items[^1]) is var (failedAt, id)
            ? Cursor.EncodeMoment(CursorKind, CursorScope.None, failedAt, id)
            : null;
        return new SummaryFailuresPage(items, total, next);
    }
}

internal sealed record ReplaySummaryFailures(IReadOnlyList<Guid>? Ids) : ICommand<FailuresReplayed>;

internal sealed class ReplaySummaryFailuresValidator : AbstractValidator<ReplaySummaryFailures>
{
    public ReplaySummaryFailuresValidator(IOptions<SummariesOptions> options)
        => RuleFor(c => c.Ids!.Count).LessThanOrEqualTo(options.Value.MaxPageSize).OverridePropertyName("ids")
            .When(c => c.Ids is not null)
            .WithMessage($"'ids' may name at most {options.Value.MaxPageSize} failures; leave 'ids' out to replay them all.");
}

internal sealed class ReplaySummaryFailuresHandler(SummaryFailures failures, TenantContext tenant) : ICommandHandler<ReplaySummaryFailures, FailuresReplayed>
{
    public async ValueTask<FailuresReplayed> Handle(ReplaySummaryFailures command, CancellationToken cancellationToken)
        => new(await failures.ReplayAsync(tenant.TenantId, command.Ids?.Distinct().ToList(), cancellationToken));
}

internal static class SummaryFailuresEndpoints
{
    public static void MapSummaryFailures(this IEndpointRouteBuilder admin)
    {
        admin.MapGet("/failures", async Task<Ok<SummaryFailuresPage>> (string? cursor, int? limit, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new ListSummaryFailures(cursor, limit), ct)))
            .WithName("ListSummaryFailures")
            .WithSummary("List the caller's tenant's summarization jobs that failed every retry (dead letters)")
            .ProducesValidationProblem();

        admin.MapPost("/failures/replay", async Task<Accepted<FailuresReplayed>> (ReplayFailuresRequest? body, ISender sender, CancellationToken ct)
                => TypedResults.Accepted("/api/admin/summaries/failures", await sender.Send(new ReplaySummaryFailures(body?.Ids), ct)))
            .WithName("ReplaySummaryFailures")
            .WithSummary("Queue the caller's tenant's failed summarization jobs again")
            .WithDescription("Body {ids: [...]} replays those of the tenant's failures ({ids: []} replays none); an empty body, or no ids, replays " +
                             "all of the tenant's. Other tenants' failures are neither listed nor replayed. The jobs are idempotent: one whose range " +
                             "was summarized meanwhile does nothing.")
            .ProducesValidationProblem();
    }
}
