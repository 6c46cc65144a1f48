using System.Diagnostics;
using OpenTelemetry.Trace;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// The root sampler of the service's traces: background polling that starts a trace of its own is not recorded, every
/// other root span is. Polling is a client span with no parent (a database command or an outbound call made by no request,
/// job or handler: the embedding queue's claim every half second, the event store's sequence poll), and the two polls
/// that the libraries wrap in a span of their own: Marten's high-water mark (<see cref="PollingRoots"/>: every second,
/// with its database commands under it) and Wolverine's check of the node assignments (every ~10 s). Children follow their
/// parent (<see cref="ParentBasedSampler"/>), so the database calls of a request or a job are traced with it.
/// </summary>
/// <remarks>
/// An idle node exported about 100 KB of such spans every 30 s, the bulk of what a hosted collector would bill while
/// nothing happened. <c>OpenTelemetry:TraceBackgroundCalls</c> keeps them; a sampler named in <c>OTEL_TRACES_SAMPLER</c>
/// replaces this one.
/// </remarks>
internal sealed class BackgroundClientCallSampler : Sampler
{
    /// <summary>
    /// The libraries' own spans around a poll, by name: as roots they are dropped with their children. (Dropping only client
    /// spans left the high-water mark's: its commands are its children, so the idle node still exported four spans a
    /// second once its projections ran.)
    /// </summary>
    internal static readonly IReadOnlySet<string> PollingRoots = new HashSet<string>(StringComparer.Ordinal)
    {
        "marten.daemon.highwatermark",
        "wolverine_node_assignments",
    };

    private static readonly SamplingResult Recorded = new(SamplingDecision.RecordAndSample);
    private static readonly SamplingResult Dropped = new(SamplingDecision.Drop);

    public BackgroundClientCallSampler() => Description = "BackgroundClientCallsDropped";

    public override SamplingResult ShouldSample(in SamplingParameters samplingParameters)
        => samplingParameters.Kind == ActivityKind.Client || PollingRoots.Contains(samplingParameters.Name) ? Dropped : Recorded;
}
