using Microsoft.AspNetCore.Http;

namespace ModularChat.BuildingBlocks.Errors;

/// <summary>
/// Details for the errors the framework answers without an exception of ours, with a status only (status code pages):
/// a body over the size limit found while the binder read it, a body that is not JSON, a body the web server could not
/// finish reading, a method the path does not take, a path with no endpoint. Their ProblemDetails had a title ("Content Too Large") and nothing saying what to change.
/// </summary>
public static class StatusCodeProblems
{
    /// <summary>What a 413 says, wherever the size limit is found out.</summary>
    public const string TooLarge = "The request body exceeds the configured maximum size (Limits:MaxRequestBodyBytes).";

    /// <summary>What a 415 for a body that is not declared JSON says, whoever finds it out (the status code pages or the binder).</summary>
    public const string NotJson = "The request body must be JSON, sent with 'Content-Type: application/json'.";

    /// <summary>
    /// The feature a stream under the request body sets when it fails the read for a reason the client should hear (a
    /// compressed body that is not valid data of its encoding): the binder answers such a failure with a bare 400.
    /// </summary>
    public sealed record BodyProblem(string Detail);

    /// <summary>Fills in <see cref="Microsoft.AspNetCore.Mvc.ProblemDetails.Detail"/> when nothing else did.</summary>
    public static void AddDetail(ProblemDetailsContext context)
    {
        var problem = context.ProblemDetails;
        var request = context.HttpContext.Request;
        problem.Detail ??= problem.Status switch
        {
            StatusCodes.Status413PayloadTooLarge => TooLarge,
            // The binder answers a body the web server failed to read (BadHttpRequestException) with the exception's
            // status only: a bare 400 is a body that could not be read, a 408 one that did not arrive in time.
            StatusCodes.Status400BadRequest when context.HttpContext.Features.Get<BodyProblem>() is { } body => body.Detail,
            StatusCodes.Status400BadRequest => "The request body could not be read: it ended before the length it announced, " +
                                               "or its chunked encoding is malformed. Nothing was stored; send it again.",
            StatusCodes.Status408RequestTimeout => "The request body did not arrive in time (the server reads a body at a minimum " +
                                                   "rate, Kestrel's MinRequestBodyDataRate). Nothing was stored; send it again.",
            StatusCodes.Status415UnsupportedMediaType => NotJson,
            StatusCodes.Status405MethodNotAllowed => context.HttpContext.Response.Headers.Allow is { Count: > 0 } allow
                ? $"{request.Method} is not allowed on this path; it takes {allow}."
                : $"{request.Method} is not allowed on this path.",
            StatusCodes.Status404NotFound when context.HttpContext.GetEndpoint() is null
                => "There is no endpoint at this path: the OpenAPI document at /openapi/v1.json lists them.",
            _ => null,
        };
    }
}
