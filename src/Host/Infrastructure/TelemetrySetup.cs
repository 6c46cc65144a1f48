using ModularChat.BuildingBlocks.Options;
using ModularChat.BuildingBlocks.Telemetry;
using Npgsql;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace ModularChat.Host.Infrastructure;

internal static class TelemetrySetup
{
    /// <summary>Trace sources beyond ASP.NET Core, HttpClient and Npgsql.</summary>
    public static readonly string[] TraceSources =
    [
        ModularChatTelemetry.SourceName,
        "Marten",
        "Wolverine",
        "Experimental.Microsoft.Extensions.AI",
        "Experimental.ModelContextProtocol",
    ];

    /// <summary>Meters beyond ASP.NET Core, HttpClient and the runtime.</summary>
    public static readonly string[] Meters =
    [
        ModularChatTelemetry.SourceName,
        "Marten",
        "Wolverine*",
        "Npgsql",
        "Microsoft.Extensions.Caching.Hybrid",
        "Experimental.Microsoft.Extensions.AI",
        "Experimental.ModelContextProtocol",
    ];

    /// <summary>
    /// OpenTelemetry traces, metrics and logs. Exported over OTLP when an endpoint is configured
    /// (OTEL_EXPORTER_OTLP_ENDPOINT or OpenTelemetry:OtlpEndpoint), over gRPC or OTLP/HTTP (OTEL_EXPORTER_OTLP_PROTOCOL or
    /// OpenTelemetry:OtlpProtocol); collected but not exported otherwise.
    /// </summary>
    public static WebApplicationBuilder AddModularChatTelemetry(this WebApplicationBuilder builder)
    {
        var otlpEndpoint = OtlpEndpoint(builder.Configuration);
        var otlpProtocol = OtlpProtocol(builder.Configuration);
        builder.Logging.AddOpenTelemetry(o =>
        {
            o.IncludeScopes = true;
            o.IncludeFormattedMessage = true;
        });
        WolverineRetryLogLevel.Register(builder.Services, builder.Configuration); // Wolverine's retries at Warning, not Error

        var exporting = otlpEndpoint is not null;
        var otel = builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(builder.Configuration["OpenTelemetry:ServiceName"] ?? "modularchat"))
            .WithMetrics(m => m
                .AddAspNetCoreInstrumentation()
                .AddHttpClientInstrumentation()
                .AddRuntimeInstrumentation()
                .AddMeter(Meters));

        // Spans are only worth recording when they go somewhere: without an exporter, creating them is pure cost
        // on every request. Tests and tools can still listen to the same ActivitySources directly.
        if (exporting || builder.Configuration.GetValue<bool>("OpenTelemetry:AlwaysTrace"))
        {
            var traceBackground = builder.Configuration.GetValue<bool>("OpenTelemetry:TraceBackgroundCalls")
                || !string.IsNullOrWhiteSpace(builder.Configuration["OTEL_TRACES_SAMPLER"]);
            otel.WithTracing(t =>
            {
                t.AddAspNetCoreInstrumentation(o => o.Filter = ctx => !ctx.Request.Path.StartsWithSegments("/health"))
                    .AddHttpClientInstrumentation()
                    .AddNpgsql()
                    .AddSource(TraceSources);
                if (!traceBackground)
                {
                    t.SetSampler(new ParentBasedSampler(new BackgroundClientCallSampler()));
                }
            });
        }

        if (exporting)
        {
            // The endpoint is a base URL either way: with UseOtlpExporter the SDK adds /v1/traces, /v1/metrics and /v1/logs
            // to it for OTLP/HTTP (each signal's options keep appending the path when the endpoint comes from the default
            // options, unlike AddOtlpExporter with an endpoint set in code). Everything else, OTEL_EXPORTER_OTLP_HEADERS
            // among it, the SDK still reads from the configuration.
            otel.UseOtlpExporter(otlpProtocol, otlpEndpoint!);
        }

        return builder;
    }

    /// <summary>
    /// The OTLP endpoint, when one is configured: an absolute http(s) URL, or the start stops with a message naming the
    /// setting (the exporter would otherwise fail with a bare "Invalid URI" and no name).
    /// </summary>
    private static Uri? OtlpEndpoint(IConfiguration configuration)
    {
        var (setting, value) = OwnOrStandard(configuration, "OpenTelemetry:OtlpEndpoint", "OTEL_EXPORTER_OTLP_ENDPOINT");
        if (value is null)
        {
            return null;
        }

        return Uri.TryCreate(value.Trim(), UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
            ? uri
            : throw new StartRefusedException(
                $"Configuration '{setting}' must be an absolute http or https URL of an OTLP collector, e.g. http://localhost:4317 (was '{value}').");
    }

    /// <summary>
    /// The OTLP protocol: <c>grpc</c> (the default) or <c>http/protobuf</c>. Another value stops the start with a message
    /// naming the setting (the SDK would ignore it and send gRPC to a collector that does not speak it).
    /// </summary>
    private static OtlpExportProtocol OtlpProtocol(IConfiguration configuration)
    {
        var (setting, value) = OwnOrStandard(configuration, "OpenTelemetry:OtlpProtocol", "OTEL_EXPORTER_OTLP_PROTOCOL");
        return value?.Trim().ToLowerInvariant() switch
        {
            null or "grpc" => OtlpExportProtocol.Grpc,
            "http/protobuf" => OtlpExportProtocol.HttpProtobuf,
            _ => throw new StartRefusedException(
                $"Configuration '{setting}' must be grpc or http/protobuf, the OTLP protocols the exporter speaks (was '{value}')."),
        };
    }

    /// <summary>ModularChat's own setting when it has a value, else the standard OpenTelemetry variable; blank counts as unset.</summary>
    private static (string Setting, string? Value) OwnOrStandard(IConfiguration configuration, string own, string standard)
        => !string.IsNullOrWhiteSpace(configuration[own]) ? (own, configuration[own])
            : !string.IsNullOrWhiteSpace(configuration[standard]) ? (standard, configuration[standard])
            : (own, null);
}
