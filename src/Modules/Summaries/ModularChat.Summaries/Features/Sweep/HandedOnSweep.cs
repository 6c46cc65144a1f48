using Wolverine;
using Wolverine.Attributes;

namespace ModularChat.Summaries.Features.Sweep;

/// <summary>
/// A requested sweep that a node had taken (answered 202) and not run when it began to stop: it waited behind another node's
/// sweep. Stored as a durable message, scheduled for any node, so the request outlives the node that accepted it.
/// </summary>
[MessageIdentity("summaries.handed-on-sweep")]
public sealed record HandedOnSweep(SweepRequest Request);

/// <summary>Hands a <see cref="HandedOnSweep"/> to this node's sweep service, or puts it off for any node while it cannot take it.</summary>
public static class HandedOnSweepHandler
{
    public static async Task<object?> Handle(HandedOnSweep handedOn, SummarySweepService sweeps, CancellationToken cancellationToken)
        // Busy: a sweep runs or waits here (the request may be another sweep altogether: it runs after it). NodeStopping: this
        // node starts nothing more. Either way another look later, on whichever node takes it then.
        => await sweeps.RequestAsync(handedOn.Request, cancellationToken) == SweepHandover.Taken
            ? null
            : handedOn.DelayedFor(SummarySweepService.HandOnDelay);
}
