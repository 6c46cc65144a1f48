using ModularChat.BuildingBlocks.Telemetry;
using Npgsql;
using OpenTelemetry;
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
    /// (OTEL_EXPORTER_OTLP_ENDPOINT or OpenTelemetry:OtlpEndpoint); collected but not exported otherwise.
    /// </summary>
    public static WebApplicationBuilder AddModularChatTelemetry(this WebApplicationBuilder builder)
    {
        var otlpEndpoint = OtlpEndpoint(builder.Configuration);
        builder.Logging.AddOpenTelemetry(o =>
        {
            o.IncludeScopes = true;
            o.IncludeFormattedMessage = true;
        });

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
            otel.WithTracing(t => t
                .AddAspNetCoreInstrumentation(o => o.Filter = ctx => !ctx.Request.Path.StartsWithSegments("/health"))
                .AddHttpClientInstrumentation()
                .AddNpgsql()
                .AddSource(TraceSources));
        }

        if (exporting)
        {
            otel.UseOtlpExporter(OpenTelemetry.Exporter.OtlpExportProtocol.Grpc, otlpEndpoint!);
        }

        return builder;
    }

    /// <summary>
    /// The OTLP endpoint, when one is configured: an absolute http(s) URL, or the start stops with a message naming the
    /// setting (the exporter would otherwise fail with a bare "Invalid URI" and no name).
    /// </summary>
    private static Uri? OtlpEndpoint(IConfiguration configuration)
    {
        var (setting, value) = configuration["OpenTelemetry:OtlpEndpoint"] is { } own
            ? ("OpenTelemetry:OtlpEndpoint", own)
            : ("OTEL_EXPORTER_OTLP_ENDPOINT", configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        if (string.IsNullOrWhiteSpace(value))
        {
            return null;
        }

        return Uri.TryCreate(value.Trim(), UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
            ? uri
            : throw new InvalidOperationException(
                $"Configuration '{setting}' must be an absolute http or https URL of an OTLP collector, e.g. http://localhost:4317 (was '{value}').");
    }
}
