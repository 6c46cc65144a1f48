using Marten;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Security;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;
using Wolverine;

namespace ModularChat.Conversations.Features.Retention;

/// <summary>A range of messages and their size.</summary>
public sealed record MessageRange(long FromSequence, long ToSequence, long Messages, long Bytes);

/// <summary>What a conversation keeps: hot messages, archived and deleted ranges, bytes kept (hot + archive).</summary>
public sealed record RetentionView(
    Guid ConversationId,
    string Policy,
    int KeepLast,
    long MessageCount,
    MessageRange? Hot,
    IReadOnlyList<MessageRange> Archived,
    IReadOnlyList<MessageRange> Deleted,
    long BytesKept);

/// <summary>Retention totals of the caller's tenant.</summary>
public sealed record RetentionTotals(
    string Policy,
    int KeepLast,
    long Conversations,
    long Messages,
    long HotMessages,
    long ArchivedMessages,
    long DeletedMessages,
    long HotBytes,
    long ArchivedBytes,
    long DeletedBytes,
    long BytesKept);

/// <summary>How many conversations were queued for retention.</summary>
public sealed record RetentionQueued(int Conversations);

internal sealed record GetRetention(Guid ConversationId) : IQuery<RetentionView>;

internal sealed class GetRetentionHandler(TenantSessions sessions, IOptionsMonitor<RetentionOptions> options) : IQueryHandler<GetRetention, RetentionView>
{
    public async ValueTask<RetentionView> Handle(GetRetention query, CancellationToken cancellationToken)
    {
        await using var session = sessions.Query();
        var c = await session.LoadAsync<Conversation>(query.ConversationId, cancellationToken)
            ?? throw new NotFoundException("Conversation", query.ConversationId);
        var policy = options.CurrentValue.For(sessions.TenantId);
        var hot = c.MessageCount > c.RetainedThrough
            ? new MessageRange(c.RetainedThrough + 1, c.MessageCount, c.MessageCount - c.RetainedThrough, c.HotBytes)
            : null;
        var archived = Ranges(c, RetentionAction.Archived);
        return new RetentionView(c.Id, policy.Name, policy.KeepLast, c.MessageCount, hot, archived, Ranges(c, RetentionAction.Deleted),
            c.HotBytes + archived.Sum(r => r.Bytes));
    }

    private static List<MessageRange> Ranges(Conversation c, RetentionAction action)
        => c.Retained.Where(r => r.Action == action).Select(r => new MessageRange(r.FromSequence, r.ToSequence, r.Messages, r.Bytes)).ToList();
}

internal sealed record GetRetentionTotals : IQuery<RetentionTotals>;

internal sealed class GetRetentionTotalsHandler(TenantSessions sessions, IOptionsMonitor<RetentionOptions> options)
    : IQueryHandler<GetRetentionTotals, RetentionTotals>
{
    public async ValueTask<RetentionTotals> Handle(GetRetentionTotals query, CancellationToken cancellationToken)
    {
        await using var session = sessions.Query();
        var rows = await session.Query<Conversation>()
            .Select(c => new RetentionRow(c.MessageCount, c.RetainedThrough, c.HotBytes, c.Retained))
            .ToListAsync(cancellationToken);
        var policy = options.CurrentValue.For(sessions.TenantId);
        var retained = rows.SelectMany(r => r.Retained).ToList();
        long Sum(RetentionAction action, Func<RetainedRange, long> value) => retained.Where(r => r.Action == action).Sum(value);
        var archivedBytes = Sum(RetentionAction.Archived, r => r.Bytes);
        var hotBytes = rows.Sum(r => r.HotBytes);
        return new RetentionTotals(
            policy.Name,
            policy.KeepLast,
            rows.Count,
            rows.Sum(r => r.MessageCount),
            rows.Sum(r => r.MessageCount - r.RetainedThrough),
            Sum(RetentionAction.Archived, r => r.Messages),
            Sum(RetentionAction.Deleted, r => r.Messages),
            hotBytes,
            archivedBytes,
            Sum(RetentionAction.Deleted, r => r.Bytes),
            hotBytes + archivedBytes);
    }
}

internal sealed record RetentionRow(long MessageCount, long RetainedThrough, long HotBytes, IReadOnlyList<RetainedRange> Retained);

/// <summary>Queues retention for every conversation of the tenant that has more than KeepLast hot messages.</summary>
internal sealed record QueueRetention : ICommand<RetentionQueued>;

internal sealed class QueueRetentionHandler(TenantSessions sessions, IMessageBus bus, IOptionsMonitor<RetentionOptions> options)
    : ICommandHandler<QueueRetention, RetentionQueued>
{
    public async ValueTask<RetentionQueued> Handle(QueueRetention command, CancellationToken cancellationToken)
    {
        var tenant = sessions.TenantId;
        var policy = options.CurrentValue.For(tenant);
        if (policy.Action is null)
        {
            return new RetentionQueued(0);
        }

        await using var session = sessions.Query();
        var candidates = await session.Query<Conversation>()
            .Select(c => new RetentionCandidate(c.Id, c.MessageCount, c.RetainedThrough))
            .ToListAsync(cancellationToken);
        var queued = 0;
        foreach (var candidate in candidates.Where(c => c.MessageCount - c.RetainedThrough > policy.KeepLast))
        {
            await bus.PublishAsync(new ApplyRetention(candidate.Id), new DeliveryOptions { TenantId = tenant });
            queued++;
        }

        return new RetentionQueued(queued);
    }
}

internal sealed record RetentionCandidate(Guid Id, long MessageCount, long RetainedThrough);

internal static class RetentionEndpoints
{
    public static void MapRetention(this IEndpointRouteBuilder conversations, IEndpointRouteBuilder app)
    {
        conversations.MapGet("/{id}/retention", async Task<Ok<RetentionView>> (Guid id, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new GetRetention(id), ct)))
            .WithName("GetRetention")
            .WithSummary("What the conversation keeps: hot range, archived and deleted ranges, bytes kept")
            .ProducesProblem(StatusCodes.Status404NotFound);

        var admin = app.MapGroup("/api/admin/retention").WithTags("Retention").RequireAuthorization(Policies.Admin);
        admin.MapGet("/", async Task<Ok<RetentionTotals>> (ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new GetRetentionTotals(), ct)))
            .WithName("GetRetentionTotals")
            .WithSummary("Retention totals of the caller's tenant (admin)");
        admin.MapPost("/apply", async Task<Accepted<RetentionQueued>> (ISender sender, CancellationToken ct)
                => TypedResults.Accepted("/api/admin/retention", await sender.Send(new QueueRetention(), ct)))
            .WithName("ApplyRetention")
            .WithSummary("Queue retention for every conversation of the caller's tenant (admin); it runs in the background");
    }
}
