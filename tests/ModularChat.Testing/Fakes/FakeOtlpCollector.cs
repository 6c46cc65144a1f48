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
