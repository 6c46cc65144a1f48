using System.Globalization;
using Microsoft.AspNetCore.Mvc;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Messaging;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// While PostgreSQL takes connections but does not answer this node's check in time (stalled, or behind a proxy or a
/// failover that is: <see cref="DatabaseOutageLog.StalledSince"/>), requests to the API answer 503 with Retry-After at once,
/// untried. Each waited about a minute otherwise, its command timeout and then Npgsql's cancel request, which waits for the
/// server to drop it, holding a thread of the pool all along: a burst of requests starved the node. The check asks
/// <c>select 1</c> every 2 s while the outage lasts, so requests are taken again within seconds of an answer. A server that
/// refuses connections is not held back here: a statement fails at once then, and what needs no database (a context from
/// the cache) is still served. Health, the API document and unknown paths pass; a request without a valid token still gets
/// its 401.
/// </summary>
/// <remarks>
/// Only the check's answer closes the gate, never one failure: the check runs once something suspects an outage
/// (Wolverine's and Marten's failures, readiness's <c>select 1</c>, and a request's own database failure, reported here).
/// Turned off with <c>Limits:RefuseRequestsWhileDatabaseAway=false</c>.
/// </remarks>
internal sealed partial class DatabaseAwayGate(
    RequestDelegate next, DatabaseOutageLog outages, IProblemDetailsService problems, TimeProvider clock, ILogger<DatabaseAwayGate> logger)
{
    private static readonly PathString Api = "/api";

    private readonly Lock _lock = new();
    private DateTimeOffset? _announced;

    public async Task InvokeAsync(HttpContext context)
    {
        if (!context.Request.Path.StartsWithSegments(Api) || context.GetEndpoint() is null)
        {
            await next(context);
            return;
        }

        if (outages.StalledSince is { } since)
        {
            await RefuseAsync(context, since);
            return;
        }

        try
        {
            await next(context);
        }
        catch (Exception e) when (Report(e))
        {
            throw; // never reached: Report only looks
        }
    }

    /// <summary>A request's statement that met the database away makes the check look (false: the exception goes on).</summary>
    private bool Report(Exception exception)
    {
        if (DatabaseOutages.IsDatabaseAway(exception))
        {
            outages.Suspect(exception);
        }

        return false;
    }

    private async Task RefuseAsync(HttpContext context, DateTimeOffset since)
    {
        var seconds = Math.Max(0, (long)(clock.GetUtcNow() - since).TotalSeconds);
        Announce(since);
        LogRefused(logger, context.Request.Method, context.Request.Path, seconds);
        context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        context.Response.Headers.RetryAfter = ProblemDetailsExceptionHandler.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
        await problems.WriteAsync(new ProblemDetailsContext
        {
            HttpContext = context,
            ProblemDetails = new ProblemDetails
            {
                Status = StatusCodes.Status503ServiceUnavailable,
                Title = "The service is temporarily unavailable.",
                Detail = $"The database has not answered this node's check for {seconds} s: the request was not tried and nothing was stored. Try again shortly.",
            },
        });
    }

    /// <summary>One warning for each time the gate closes (each request refused is at Debug).</summary>
    private void Announce(DateTimeOffset since)
    {
        lock (_lock)
        {
            if (_announced == since)
            {
                return;
            }

            _announced = since;
        }

        LogClosed(logger);
    }

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "PostgreSQL takes connections but does not answer this node's check: API requests answer 503 at once, untried, until it answers (checked every 2 s)")]
    private static partial void LogClosed(ILogger logger);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Method} {Path} answered 503 untried: PostgreSQL has not answered this node's check for {Seconds} s")]
    private static partial void LogRefused(ILogger logger, string method, string path, long seconds);
}

internal static class DatabaseAwayGateExtensions
{
    /// <summary>The gate, unless <c>Limits:RefuseRequestsWhileDatabaseAway</c> is false; after authorization (a 401 stays a 401).</summary>
    public static IApplicationBuilder UseDatabaseAwayGate(this IApplicationBuilder app, HostLimits limits)
        => limits.RefuseRequestsWhileDatabaseAway ? app.UseMiddleware<DatabaseAwayGate>() : app;
}
