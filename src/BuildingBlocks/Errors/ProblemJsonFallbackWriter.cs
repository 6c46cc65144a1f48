using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Options;
using HttpJsonOptions = Microsoft.AspNetCore.Http.Json.JsonOptions;

namespace ModularChat.BuildingBlocks.Errors;

/// <summary>
/// Writes a ProblemDetails as <c>application/problem+json</c> when ASP.NET Core's own writer declines because the request's
/// <c>Accept</c> header names no JSON type (a streaming client sends <c>text/event-stream</c>, a browser <c>text/html</c>).
/// Without it such a request got a 500, or an error status with an empty body, for every error: a 401 that a client
/// would refresh its token on, a 404, a 409 explaining what to do.
/// </summary>
/// <remarks>
/// Registered after <c>AddProblemDetails</c>:
/// the framework's writer still writes whatever it accepts, this one the rest, with the same <c>type</c> and <c>title</c>
/// defaults and the same <see cref="ProblemDetailsOptions.CustomizeProblemDetails"/>.
/// </remarks>
public sealed class ProblemJsonFallbackWriter(IOptions<ProblemDetailsOptions> options, IOptions<HttpJsonOptions> json) : IProblemDetailsWriter
{
    private static readonly Dictionary<int, string> Sections = new()
    {
        [400] = "15.5.1", [401] = "15.5.2", [403] = "15.5.4", [404] = "15.5.5", [405] = "15.5.6", [406] = "15.5.7",
        [408] = "15.5.9", [409] = "15.5.10", [412] = "15.5.13", [413] = "15.5.14", [415] = "15.5.16", [422] = "15.5.21",
        [500] = "15.6.1", [502] = "15.6.3", [503] = "15.6.4", [504] = "15.6.5",
    };

    /// <summary>The <c>type</c> a ProblemDetails of <paramref name="status"/> gets (the RFC 9110 section), null for a status without one.</summary>
    public static string? TypeFor(int status)
        => Sections.TryGetValue(status, out var section) ? $"https://tools.ietf.org/html/rfc9110#section-{section}" : null;

    public bool CanWrite(ProblemDetailsContext context) => true;

    public ValueTask WriteAsync(ProblemDetailsContext context)
    {
        var response = context.HttpContext.Response;
        var problem = context.ProblemDetails;
        var status = problem.Status ??= response.StatusCode;
        problem.Type ??= TypeFor(status);

        problem.Title ??= ReasonPhrases.GetReasonPhrase(status);
        options.Value.CustomizeProblemDetails?.Invoke(context);
        return new ValueTask(response.WriteAsJsonAsync(problem, problem.GetType(), json.Value.SerializerOptions, "application/problem+json"));
    }
}
