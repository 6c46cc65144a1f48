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
        var otlpEndpoint = builder.Configuration["OpenTelemetry:OtlpEndpoint"] ?? builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"];
        builder.Logging.AddOpenTelemetry(o =>
        {
            o.IncludeScopes = true;
            o.IncludeFormattedMessage = true;
        });

        var exporting = !string.IsNullOrWhiteSpace(otlpEndpoint);
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
            otel.UseOtlpExporter(OpenTelemetry.Exporter.OtlpExportProtocol.Grpc, new Uri(otlpEndpoint!));
        }

        return builder;
    }
}
