using System.Text.Json;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using StackExchange.Redis;

namespace ModularChat.Host.Infrastructure;

internal static class HealthSetup
{
    /// <summary>The tag of the checks that <c>/health/ready</c> runs.</summary>
    internal const string Ready = "ready";

    public static IServiceCollection AddModularChatHealth(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSingleton<PostgresReadiness>();
        var checks = services.AddHealthChecks().AddCheck<PostgresReadiness>("postgresql", tags: [Ready]);
        if (!string.IsNullOrWhiteSpace(configuration.GetConnectionString("Redis")))
        {
            // Redis is an accelerator: without it we still serve (from L1 and PostgreSQL), so it only degrades readiness.
            checks.AddRedis(sp => sp.GetRequiredService<IConnectionMultiplexer>(), name: "redis",
                failureStatus: HealthStatus.Degraded, tags: [Ready], timeout: TimeSpan.FromSeconds(2));
        }

        return services;
    }

    public static void MapModularChatHealth(this IEndpointRouteBuilder app)
    {
        // GET and HEAD only (MapHealthChecks answers every method): a POST or DELETE answers 405 with Allow, as elsewhere.
        app.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false, ResponseWriter = WriteAsync })
            .WithMetadata(new HttpMethodMetadata([HttpMethods.Get, HttpMethods.Head]))
            .AllowAnonymous();
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = c => c.Tags.Contains(Ready), ResponseWriter = WriteAsync })
            .WithMetadata(new HttpMethodMetadata([HttpMethods.Get, HttpMethods.Head]))
            .AllowAnonymous();
    }

    /// <summary>
    /// What the anonymous health answer says about a check. Never the exception's own text: a client library's message
    /// carries addresses, ports and its internals (StackExchange.Redis: thread-pool counts, client name, version), which
    /// an unauthenticated caller should not learn. The health check service logs the exception itself. The service's own
    /// checks (<c>projections</c>) say what they found in words of their own, made for that answer.
    /// </summary>
    private static string? Describe(string name, HealthReportEntry entry)
    {
        if (entry.Status == HealthStatus.Healthy)
        {
            return null;
        }

        if (name == ProjectionStallHealthCheck.Name)
        {
            return entry.Description;
        }

        var what = name switch
        {
            "postgresql" => "PostgreSQL",
            "redis" => "Redis",
            _ => name,
        };
        return entry.Exception switch
        {
            TimeoutException or OperationCanceledException => $"{what} did not answer in time; see the service's log.",
            _ => $"{what} is unreachable; see the service's log.",
        };
    }

    private static Task WriteAsync(HttpContext context, HealthReport report)
    {
        context.Response.ContentType = "application/json";
        return JsonSerializer.SerializeAsync(context.Response.Body, new
        {
            status = report.Status.ToString(),
            durationMs = report.TotalDuration.TotalMilliseconds,
            checks = report.Entries.ToDictionary(e => e.Key, e => new
            {
                status = e.Value.Status.ToString(),
                description = Describe(e.Key, e.Value),
                durationMs = e.Value.Duration.TotalMilliseconds,
            }),
        }, JsonSerializerOptions.Web, context.RequestAborted);
    }
}
