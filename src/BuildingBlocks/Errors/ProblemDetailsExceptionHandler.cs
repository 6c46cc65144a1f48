using System.Text.Json;
using System.Text.RegularExpressions;
using FluentValidation;
using JasperFx;
using JasperFx.Events;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Validation;
using Npgsql;

namespace ModularChat.BuildingBlocks.Errors;

/// <summary>
/// Turns every exception that reaches the HTTP pipeline into an RFC 9457 ProblemDetails that
/// names the problem. Anything a client can cause maps to a 4xx; a database that cannot be reached right now, or does
/// not answer in time, gives a 503 with Retry-After (clients and load balancers retry it); only genuine faults give a 500, and those never carry
/// internal details.
/// </summary>
public sealed partial class ProblemDetailsExceptionHandler(
    IProblemDetailsService problemDetails,
    ILogger<ProblemDetailsExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        if (exception is OperationCanceledException && httpContext.RequestAborted.IsCancellationRequested)
        {
            // The client went away: nobody is left to read a response.
            return true;
        }

        var problem = Map(exception);
        if (problem.Status == StatusCodes.Status503ServiceUnavailable)
        {
            // Every 503 asks the client to come back (another node, or the database back); only the log line differs.
            httpContext.Response.Headers.RetryAfter = RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            LogUnavailable(exception, httpContext.Request);
        }
        else if (problem.Status >= 500)
        {
            LogUnhandled(logger, exception, httpContext.Request.Method, httpContext.Request.Path);
        }

        httpContext.Response.StatusCode = problem.Status ?? StatusCodes.Status500InternalServerError;
        return await problemDetails.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            ProblemDetails = problem,
            Exception = exception,
        });
    }

    /// <summary>
    /// Logs why a request answered 503: a stopping node at Information (a deploy, nothing wrong), the database that cannot
    /// be reached or did not answer in time at Warning, with its reason.
    /// </summary>
    private void LogUnavailable(Exception exception, HttpRequest request)
    {
        if (exception is NodeStoppingException)
        {
            LogNodeStopping(logger, request.Method, request.Path);
        }
        else
        {
            LogDatabaseUnavailable(logger, request.Method, request.Path,
                IsDatabaseTimeout(exception) ? "did not answer in time" : "cannot be reached", exception.GetBaseException().Message);
        }
    }

    /// <summary>The ProblemDetails for an exception (public for tests of the mapping).</summary>
    public static ProblemDetails Map(Exception exception) => exception switch
    {
        ValidationException validation => FromValidation(validation),
        BadRequestException bad => Invalid(bad.Field, bad.Message),
        NodeStoppingException stopping => new ProblemDetails
        {
            Status = StatusCodes.Status503ServiceUnavailable,
            Title = "This node is stopping.",
            Detail = stopping.Message,
        },
        NotFoundException notFound => new ProblemDetails
        {
            Status = StatusCodes.Status404NotFound,
            Title = $"{notFound.Resource} not found.",
            Detail = notFound.Message,
        },
        ConflictException conflict => WithExtensions(new ProblemDetails
        {
            Status = StatusCodes.Status409Conflict,
            Title = "The request conflicts with the current state.",
            Detail = conflict.Message,
        }, conflict.Extensions),
        _ when exception.InChain(e => e is ConcurrencyException or EventStreamUnexpectedMaxEventIdException) => new ProblemDetails
        {
            Status = StatusCodes.Status409Conflict,
            Title = "The resource was changed by another request.",
            Detail = "The expected version does not match the current version: read the resource again and retry.",
        },
        LimitExceededException limit => new ValidationProblemDetails(new Dictionary<string, string[]> { [limit.Field] = [limit.Message] })
        {
            Status = limit.PayloadTooLarge ? StatusCodes.Status413PayloadTooLarge : StatusCodes.Status422UnprocessableEntity,
            Title = limit.PayloadTooLarge ? "The request is too large." : "A configured limit was exceeded.",
            Detail = limit.Message,
        },
        // A body that is not the JSON an endpoint takes arrives wrapped (the framework's binding); a bare JsonException
        // comes from the service reading its own data (a stored or cached document), which is no fault of the request.
        BadHttpRequestException bad => FromBadHttpRequest(bad),
        _ when exception.InChain(e => e is PostgresException { SqlState: PostgresErrorCodes.UntranslatableCharacter or PostgresErrorCodes.CharacterNotInRepertoire }) => new ProblemDetails
        {
            // What the request body's check (StorableTextJsonConverter) cannot see, e.g. a query-string value.
            Status = StatusCodes.Status400BadRequest,
            Title = "The request is invalid.",
            Detail = "The request holds text that cannot be stored (the NUL character, U+0000, \\u0000). Nothing was stored.",
        },
        _ when IsDatabaseUnavailable(exception) => new ProblemDetails
        {
            Status = StatusCodes.Status503ServiceUnavailable,
            Title = "The service is temporarily unavailable.",
            Detail = IsDatabaseTimeout(exception)
                ? "Its database did not answer in time (it is overloaded, or the data is locked by other work): nothing of this request was stored; retry shortly (appends with an externalId are safe to retry)."
                : "Its database cannot be reached right now: retry shortly (appends with an externalId are safe to retry).",
        },
        _ => new ProblemDetails
        {
            Status = StatusCodes.Status500InternalServerError,
            Title = "An unexpected error occurred.",
            Detail = "The error has been logged; quote the traceId when you report it.",
        },
    };

    /// <summary>A database command that ran past its timeout (Npgsql's <c>Command Timeout</c>), at any depth.</summary>
    private static bool IsDatabaseTimeout(Exception exception) => exception.InChain(e => e is TimeoutException);

    /// <summary>Seconds a client is asked to wait before retrying a 503.</summary>
    public const int RetryAfterSeconds = 5;

    /// <summary>
    /// A failure of the database connection rather than of the request: no connection, a connection lost, the pool
    /// exhausted, the server shutting down or out of connections, a command past its timeout (Npgsql marks these
    /// transient), at any depth (Marten and Wolverine wrap them).
    /// </summary>
    private static bool IsDatabaseUnavailable(Exception exception) => exception.InChain(e => e is NpgsqlException { IsTransient: true });

    private static ProblemDetails FromValidation(ValidationException validation)
    {
        var failures = validation.Errors.Select(e =>
        {
            var field = ToCamelCase(e.PropertyName);
            return (Field: field, Message: QualifiedMessage(field, e.ErrorMessage));
        }).ToList();
        var errors = failures
            .GroupBy(f => f.Field)
            .ToDictionary(g => g.Key, g => g.Select(f => f.Message).Distinct().ToArray());
        var isLimit = validation.Errors.Any(e => e.ErrorCode == Limits.ErrorCode);
        return new ValidationProblemDetails(errors)
        {
            Status = isLimit ? StatusCodes.Status422UnprocessableEntity : StatusCodes.Status400BadRequest,
            Title = isLimit ? "A configured limit was exceeded." : "The request is invalid.",
            Detail = string.Join(" ", failures.Select(f => f.Message).Distinct()),
        };
    }

    /// <summary>
    /// A validator of one item names its field plainly ("'role' must be ..."), as it does for a request of one item;
    /// inside a collection ("messages[1].role") the message names the field by its path, so that it says which item.
    /// </summary>
    private static string QualifiedMessage(string field, string message)
    {
        var leaf = field.LastIndexOf('.');
        if (leaf < 0 || field.IndexOf('[', StringComparison.Ordinal) < 0)
        {
            return message;
        }

        var plain = $"'{field[(leaf + 1)..]}'";
        return message.StartsWith(plain, StringComparison.Ordinal) ? $"'{field}'{message[plain.Length..]}" : message;
    }

    private static ProblemDetails FromBadHttpRequest(BadHttpRequestException bad)
    {
        if (bad.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return new ProblemDetails
            {
                Status = StatusCodes.Status413PayloadTooLarge,
                Title = "The request is too large.",
                Detail = StatusCodeProblems.TooLarge,
            };
        }

        if (bad.InnerException is JsonException json)
        {
            return Malformed(json);
        }

        if (bad.InnerException is InvalidDataException)
        {
            // A compressed body that is not valid data of its Content-Encoding, found by a middleware reading it (the host's
            // request decompression says which).
            return new ProblemDetails { Status = StatusCodes.Status400BadRequest, Title = "The request body is malformed.", Detail = bad.Message };
        }

        // The minimal-API binder (RouteHandlerOptions.ThrowOnBadRequest) words its errors for the developer of the
        // endpoint: C# types and parameter names, "Did you mean to use a Service instead?". Said to the client instead.
        var message = bad.Message;
        if (BindingFailed().Match(message) is { Success: true } binding)
        {
            return Invalid(binding.Groups["name"].Value,
                $"'{Shortened(binding.Groups["value"].Value)}' is not a valid value for '{binding.Groups["name"].Value}'{Expected(binding.Groups["type"].Value)}.");
        }

        var required = RequiredNotProvided().Match(message);
        if (BodyNotProvided().IsMatch(message) || required.Success && required.Groups["source"].Value == "body")
        {
            return new ProblemDetails
            {
                Status = StatusCodes.Status400BadRequest,
                Title = "The request is invalid.",
                Detail = "The request body is required (a JSON object).",
            };
        }

        if (required.Success)
        {
            return Invalid(required.Groups["name"].Value, $"'{required.Groups["name"].Value}' is required (in the {required.Groups["source"].Value}).");
        }

        if (BodyUnreadable().IsMatch(message))
        {
            return new ProblemDetails
            {
                Status = StatusCodes.Status400BadRequest,
                Title = "The request body is malformed.",
                Detail = "The request body is not valid JSON for this endpoint.",
            };
        }

        if (bad.StatusCode == StatusCodes.Status415UnsupportedMediaType)
        {
            // A Content-Type the binder cannot read as JSON (none, or a malformed one such as "application/json;;;"): said as
            // the status code pages say it for another media type.
            return new ProblemDetails { Status = bad.StatusCode, Title = "Unsupported Media Type", Detail = StatusCodeProblems.NotJson };
        }

        return new ProblemDetails
        {
            Status = bad.StatusCode is >= 400 and < 500 ? bad.StatusCode : StatusCodes.Status400BadRequest,
            Title = "The request is invalid.",
            Detail = message,
        };
    }

    private static ValidationProblemDetails Invalid(string field, string message)
        => new(new Dictionary<string, string[]> { [field] = [message] })
        {
            Status = StatusCodes.Status400BadRequest,
            Title = "The request is invalid.",
            Detail = message,
        };

    /// <summary>What a value of a route or query parameter's type looks like, in the client's terms (not C#'s).</summary>
    private static string Expected(string type) => type.Replace("Nullable<", "", StringComparison.Ordinal).TrimEnd('?', '>') switch
    {
        "Guid" => ": expected a UUID",
        "int" or "long" or "short" or "Int32" or "Int64" or "Int16" => ": expected a whole number",
        "bool" or "Boolean" => ": expected true or false",
        "DateTimeOffset" or "DateTime" => ": expected an ISO 8601 date and time",
        _ => "",
    };

    /// <summary>A client's value quoted back, cut to a length a message can hold.</summary>
    private static string Shortened(string value) => value.Length > 100 ? value[..100] + "..." : value;

    // The wording of Microsoft.AspNetCore.Http.RequestDelegateFactory's exceptions (parameters are named as in the
    // route or query string: no endpoint renames them).
    [GeneratedRegex("""^Failed to bind parameter "(?<type>.+) (?<name>[^ "]+)" from "(?<value>.*)"\.$""", RegexOptions.Singleline)]
    private static partial Regex BindingFailed();

    [GeneratedRegex("""^Implicit body inferred for parameter "[^"]*" but no body was provided\.""")]
    private static partial Regex BodyNotProvided();

    [GeneratedRegex("""^Required parameter "(?<type>.+) (?<name>[^ "]+)" was not provided from (?<source>.+)\.$""", RegexOptions.Singleline)]
    private static partial Regex RequiredNotProvided();

    [GeneratedRegex("""^Failed to read parameter ".+" from the request body as (JSON|form)\.$""", RegexOptions.Singleline)]
    private static partial Regex BodyUnreadable();

    private static ProblemDetails Malformed(JsonException json)
    {
        if (json is UnstorableTextException unstorable)
        {
            var field = json.Path is { Length: > 2 } at && at.StartsWith("$.", StringComparison.Ordinal) ? at[2..] : "body";
            var message = $"'{field}': {unstorable.Reason}.";
            return new ValidationProblemDetails(new Dictionary<string, string[]> { [field] = [message] })
            {
                Status = StatusCodes.Status400BadRequest,
                Title = "The request is invalid.",
                Detail = message,
            };
        }

        var detail = json.Path is { Length: > 0 } path
            ? $"The request body is not valid JSON for this endpoint at '{path}' (line {json.LineNumber + 1}, byte {json.BytePositionInLine})."
            : "The request body is not valid JSON for this endpoint.";
        return new ProblemDetails
        {
            Status = StatusCodes.Status400BadRequest,
            Title = "The request body is malformed.",
            Detail = detail,
        };
    }

    private static ProblemDetails WithExtensions(ProblemDetails problem, IReadOnlyDictionary<string, object?> extensions)
    {
        foreach (var (key, value) in extensions)
        {
            problem.Extensions[key] = value;
        }

        return problem;
    }

    private static string ToCamelCase(string propertyName)
        => string.Join('.', propertyName.Split('.').Select(p => p.Length == 0 ? p : char.ToLowerInvariant(p[0]) + p[1..]));

    [LoggerMessage(Level = LogLevel.Information, Message = "{Method} {Path} answered 503: this node is stopping")]
    private static partial void LogNodeStopping(ILogger logger, string method, string path);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Method} {Path} answered 503: the database {Failure} ({Reason})")]
    private static partial void LogDatabaseUnavailable(ILogger logger, string method, string path, string failure, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Unhandled exception for {Method} {Path}")]
    private static partial void LogUnhandled(ILogger logger, Exception exception, string method, string path);
}
