using System.Diagnostics;
using OpenTelemetry.Trace;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// The root sampler of the service's traces: a client span that starts a trace of its own (a database command or an
/// outbound call made by no request, job or handler: the embedding queue's claim every half second, the event store's
/// sequence poll, Wolverine's node checks) is not recorded; every other root span is. Children follow their parent
/// (<see cref="ParentBasedSampler"/>), so the database calls of a request or a job are traced with it.
/// </summary>
/// <remarks>
/// An idle node exported about 100 KB of such spans every 30 s, the bulk of what a hosted collector would bill while
/// nothing happened. <c>OpenTelemetry:TraceBackgroundCalls</c> keeps them; a sampler named in <c>OTEL_TRACES_SAMPLER</c>
/// replaces this one.
/// </remarks>
internal sealed class BackgroundClientCallSampler : Sampler
{
    private static readonly SamplingResult Recorded = new(SamplingDecision.RecordAndSample);
    private static readonly SamplingResult Dropped = new(SamplingDecision.Drop);

    public BackgroundClientCallSampler() => Description = "BackgroundClientCallsDropped";

    public override SamplingResult ShouldSample(in SamplingParameters samplingParameters)
        => samplingParameters.Kind == ActivityKind.Client ? Dropped : Recorded;
}
