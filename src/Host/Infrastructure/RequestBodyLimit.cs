using ModularChat.BuildingBlocks.Validation;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// Enforces <see cref="HostLimits.MaxRequestBodyBytes"/> on every server, not only Kestrel: a declared
/// Content-Length over the limit is refused before reading, and a body without one is cut off the
/// moment it passes the limit. Both surface as a 413 ProblemDetails.
/// </summary>
internal static class RequestBodyLimit
{
    public static IApplicationBuilder UseRequestBodyLimit(this IApplicationBuilder app, long maxBytes) => app.Use(async (context, next) =>
    {
        if (context.Request.ContentLength > maxBytes)
        {
            throw TooLarge(maxBytes);
        }

        context.Request.Body = new LimitedReadStream(context.Request.Body, maxBytes, () => TooLarge(maxBytes));
        await next(context);
    });

    private static BadHttpRequestException TooLarge(long maxBytes)
        => new($"The request body is larger than the configured maximum of {maxBytes} bytes.", StatusCodes.Status413PayloadTooLarge);
}
