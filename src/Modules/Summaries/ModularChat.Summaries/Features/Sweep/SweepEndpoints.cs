using FluentValidation;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Tenancy;

namespace ModularChat.Summaries.Features.Sweep;

/// <summary>Body of <c>POST /api/admin/summaries/sweep</c>.</summary>
/// <param name="Resummarize">Rebuild every summary (after a strategy or model change) instead of only missing and stale ones.</param>
/// <param name="Tenant">Only this tenant's conversations.</param>
public sealed record StartSweepRequest(bool? Resummarize, string? Tenant);

/// <summary>The sweep status: whether this node is sweeping now, and the last finished sweep of any node.</summary>
public sealed record SweepStatus(bool Running, SweepResult? Last);

internal sealed record StartSweep(bool Resummarize, string? Tenant) : ICommand<SweepStatus>;

internal sealed class StartSweepValidator : AbstractValidator<StartSweep>
{
    public StartSweepValidator()
    {
        RuleFor(c => c.Tenant).Must(t => t is null || !string.IsNullOrWhiteSpace(t)).WithMessage("'tenant' must not be blank when given.");
        RuleFor(c => c.Tenant).Must(t => t is null || t.Trim().Length <= TenantContext.MaxTenantIdLength)
            .WithMessage($"'tenant' is longer than {TenantContext.MaxTenantIdLength} characters, which no tenant id is.");
        RuleFor(c => c.Tenant).Must(t => t is null || !t.Any(char.IsControl))
            .WithMessage("'tenant' holds control characters, which no tenant id does.");
    }
}

internal sealed class StartSweepHandler(SummarySweepService sweeps) : ICommandHandler<StartSweep, SweepStatus>
{
    public async ValueTask<SweepStatus> Handle(StartSweep command, CancellationToken cancellationToken)
    {
        switch (await sweeps.RequestAsync(new SweepRequest(command.Resummarize, command.Tenant?.Trim()), cancellationToken))
        {
            case SweepHandover.NodeStopping:
                // Accepted, it would never run: the stopping node's sweep service starts nothing more.
                throw new NodeStoppingException("This node is stopping and runs no more sweeps: nothing was started. Send the request again (another node takes it).");
            case SweepHandover.Busy:
                throw new ConflictException("A summary sweep is already running on this node: wait for it to finish (GET /api/admin/summaries/sweep).");
        }

        return new SweepStatus(true, await sweeps.LastAsync(cancellationToken));
    }
}

internal sealed record GetSweepStatus : IQuery<SweepStatus>;

internal sealed class GetSweepStatusHandler(SummarySweepService sweeps) : IQueryHandler<GetSweepStatus, SweepStatus>
{
    public async ValueTask<SweepStatus> Handle(GetSweepStatus query, CancellationToken cancellationToken)
        => new(sweeps.Running, await sweeps.LastAsync(cancellationToken));
}

internal static class SweepEndpoints
{
    public static void MapSweep(this IEndpointRouteBuilder admin)
    {
        admin.MapPost("/sweep", async Task<Accepted<SweepStatus>> (StartSweepRequest? body, ISender sender, CancellationToken ct)
                => TypedResults.Accepted("/api/admin/summaries/sweep", await sender.Send(new StartSweep(body?.Resummarize ?? false, body?.Tenant), ct)))
            .WithName("StartSummarySweep")
            .WithSummary("Find conversations whose summary is missing or stale and queue them (resummarize=true rebuilds every summary)")
            .WithDescription("Runs in the background on this node, one node at a time; GET the same path for its progress and last result. " +
                             "A node that is stopping answers 503 with Retry-After and starts nothing.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);

        admin.MapGet("/sweep", async Task<Ok<SweepStatus>> (ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new GetSweepStatus(), ct)))
            .WithName("GetSummarySweep")
            .WithSummary("Whether a sweep is running here, and the last sweep's result");
    }
}
