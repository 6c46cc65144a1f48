using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace ModularChat.Testing.Fakes;

/// <summary>One export request a <see cref="FakeOtlpCollector"/> received, whatever its path.</summary>
/// <param name="Path">The request path, e.g. <c>/v1/traces</c> or <c>/opentelemetry.proto.collector.trace.v1.TraceService/Export</c>.</param>
/// <param name="Authorization">The Authorization header, as hosted collectors read it.</param>
/// <param name="Body">The protobuf payload as sent (gRPC: with its 5-byte message prefix); left out of a failure's JSON.</param>
public sealed record OtlpExport(string Path, string? Authorization, [property: JsonIgnore] byte[] Body)
{
    /// <summary>
    /// Whether the payload holds <paramref name="text"/>: protobuf stores strings (names, attribute values, log messages) as
    /// their raw UTF-8 bytes, so this finds them without decoding the message.
    /// </summary>
    public bool Contains(string text) => Body.AsSpan().IndexOf(Encoding.UTF8.GetBytes(text)) >= 0;

    /// <summary>
    /// The spans of a traces export. Reads the few protobuf fields it needs (ExportTraceServiceRequest.resource_spans,
    /// ResourceSpans.scope_spans, ScopeSpans.scope and spans, InstrumentationScope.name, Span.parent_span_id, name and
    /// start_time_unix_nano) and skips the others.
    /// </summary>
    public IEnumerable<OtlpSpan> Spans()
    {
        var request = Path.Contains("/opentelemetry.proto", StringComparison.Ordinal) ? Body.AsMemory(5) : Body.AsMemory();
        foreach (var resourceSpans in Fields(request, 1))
        {
            foreach (var scopeSpans in Fields(resourceSpans.Bytes, 2))
            {
                var scope = Fields(scopeSpans.Bytes, 1).SelectMany(s => Fields(s.Bytes, 1)).Select(n => Text(n.Bytes)).FirstOrDefault() ?? "";
                foreach (var span in Fields(scopeSpans.Bytes, 2))
                {
                    yield return new OtlpSpan(
                        scope,
                        Fields(span.Bytes, 5).Select(n => Text(n.Bytes)).FirstOrDefault() ?? "",
                        !Fields(span.Bytes, 4).Any(parent => parent.Bytes.Length > 0),
                        DateTimeOffset.UnixEpoch.AddTicks((long)(Fields(span.Bytes, 7).Select(t => t.Value).FirstOrDefault() / 100)),
                        span.Bytes.ToArray());
                }
            }
        }
    }

    private static string Text(ReadOnlyMemory<byte> bytes) => Encoding.UTF8.GetString(bytes.Span);

    /// <summary>The fields numbered <paramref name="number"/> of a protobuf message: a length-delimited one's bytes, or a number's value.</summary>
    private static List<(ReadOnlyMemory<byte> Bytes, ulong Value)> Fields(ReadOnlyMemory<byte> message, int number)
    {
        var found = new List<(ReadOnlyMemory<byte>, ulong)>();
        var position = 0;
        while (position < message.Length)
        {
            var key = Varint(message.Span, ref position);
            var bytes = ReadOnlyMemory<byte>.Empty;
            ulong value;
            switch (key & 7)
            {
                case 0:
                    value = Varint(message.Span, ref position);
                    break;
                case 1:
                    value = BinaryPrimitives.ReadUInt64LittleEndian(message.Span.Slice(position, 8));
                    position += 8;
                    break;
                case 5:
                    value = BinaryPrimitives.ReadUInt32LittleEndian(message.Span.Slice(position, 4));
                    position += 4;
                    break;
                case 2:
                    value = Varint(message.Span, ref position);
                    bytes = message.Slice(position, (int)value);
                    position += (int)value;
                    break;
                default:
                    return found; // groups, which OTLP does not use
            }

            if ((int)(key >> 3) == number)
            {
                found.Add((bytes, value));
            }
        }

        return found;
    }

    private static ulong Varint(ReadOnlySpan<byte> bytes, ref int position)
    {
        ulong value = 0;
        for (var shift = 0; position < bytes.Length; shift += 7)
        {
            var b = bytes[position++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                break;
            }
        }

        return value;
    }
}

/// <summary>One span of a traces export (<see cref="OtlpExport.Spans"/>).</summary>
/// <param name="Scope">Its instrumentation scope (the ActivitySource), e.g. <c>Npgsql</c>.</param>
/// <param name="Root">Whether it has no parent.</param>
/// <param name="Start">When it started, by the exporting node's clock.</param>
/// <param name="Body">Its protobuf message, attributes and all.</param>
public sealed record OtlpSpan(string Scope, string Name, bool Root, DateTimeOffset Start, [property: JsonIgnore] byte[] Body)
{
    /// <summary>Whether the span holds <paramref name="text"/> (its name, an attribute's value), as <see cref="OtlpExport.Contains"/>.</summary>
    public bool Contains(string text) => Body.AsSpan().IndexOf(Encoding.UTF8.GetBytes(text)) >= 0;

    public override string ToString() => $"{Scope}: {Name}{(Root ? " (root)" : "")} at {Start:HH:mm:ss.fff}";
}

/// <summary>
/// A real OTLP collector on loopback Kestrel that keeps every export it is sent and answers it as a collector does: over
/// OTLP/HTTP (protobuf, <c>POST {base}/v1/traces|metrics|logs</c>, 200 with an empty message) or over OTLP/gRPC (HTTP/2
/// cleartext, the collector services' <c>Export</c> methods, an empty message and <c>grpc-status: 0</c>). Any other path
/// is recorded too and answered 404, so a test sees where an exporter sent what.
/// </summary>
public sealed class FakeOtlpCollector : IAsyncDisposable
{
    private static readonly string[] HttpPaths = ["/v1/traces", "/v1/metrics", "/v1/logs"];

    private static readonly string[] GrpcPaths =
    [
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    ];

    private readonly WebApplication _app;

    private FakeOtlpCollector(WebApplication app, bool grpc)
    {
        _app = app;
        Grpc = grpc;
    }

    /// <summary>Whether it speaks OTLP/gRPC (else OTLP/HTTP).</summary>
    public bool Grpc { get; }

    /// <summary>Its root, e.g. <c>http://127.0.0.1:41234</c> (no trailing slash).</summary>
    public Uri BaseUrl { get; private set; } = null!;

    /// <summary>Every request received, in order.</summary>
    public ConcurrentQueue<OtlpExport> Exports { get; } = new();

    /// <summary>The paths of the traces, metrics and logs exports under <paramref name="basePath"/> (e.g. <c>/otlp</c>), in that order.</summary>
    public IReadOnlyList<string> SignalPaths(string basePath = "")
        => (Grpc ? GrpcPaths : HttpPaths).Select(p => basePath.TrimEnd('/') + p).ToList();

    /// <param name="grpc">OTLP/gRPC over HTTP/2 cleartext (the collector's port 4317) instead of OTLP/HTTP (port 4318).</param>
    public static async Task<FakeOtlpCollector> StartAsync(bool grpc)
    {
        var builder = LoopbackServer.CreateBuilder();
        // gRPC clients speak HTTP/2 with prior knowledge, which a cleartext endpoint accepts only when it speaks HTTP/2 alone.
        builder.WebHost.ConfigureKestrel(k => k.ConfigureEndpointDefaults(e => e.Protocols = grpc ? HttpProtocols.Http2 : HttpProtocols.Http1AndHttp2));
        var app = builder.Build();
        var collector = new FakeOtlpCollector(app, grpc);
        app.Run(collector.ReceiveAsync);
        collector.BaseUrl = new Uri(await LoopbackServer.StartAsync(app));
        return collector;
    }

    private async Task ReceiveAsync(HttpContext context)
    {
        using var body = new MemoryStream();
        await context.Request.Body.CopyToAsync(body, context.RequestAborted);
        var path = context.Request.Path.Value ?? "";
        Exports.Enqueue(new OtlpExport(path, context.Request.Headers.Authorization.FirstOrDefault(), body.ToArray()));
        if (!(Grpc ? GrpcPaths : HttpPaths).Any(p => path.EndsWith(p, StringComparison.Ordinal)))
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return;
        }

        if (Grpc)
        {
            // An empty Export*ServiceResponse: no compression flag, zero length.
            context.Response.ContentType = "application/grpc";
            await context.Response.Body.WriteAsync(new byte[5], context.RequestAborted);
            context.Response.AppendTrailer("grpc-status", "0");
        }
        else
        {
            context.Response.ContentType = "application/x-protobuf";
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
