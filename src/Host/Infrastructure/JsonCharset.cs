using System.Text;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// The charset of a JSON body, settled before the endpoint reads it. The framework reads a JSON body in the charset its
/// Content-Type names, and one it cannot decode (<c>windows-1252</c>, a misspelling, or <c>"utf-8"</c> with quotes,
/// which HTTP allows) made it throw an exception no handler maps: a 500. An unknown charset now answers 415 naming it,
/// and a quoted one is read unquoted.
/// </summary>
internal static class JsonCharset
{
    public static IApplicationBuilder UseJsonCharsetCheck(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        var request = context.Request;
        if (HasBody(context)
            && request.ContentType is { } contentType
            && MediaTypeHeaderValue.TryParse(contentType, out var media)
            && media.Charset.HasValue
            && IsJson(media))
        {
            var charset = HeaderUtilities.RemoveQuotes(media.Charset).Trim().ToString();
            if (!Known(charset))
            {
                context.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
                await context.RequestServices.GetRequiredService<IProblemDetailsService>().WriteAsync(new ProblemDetailsContext
                {
                    HttpContext = context,
                    ProblemDetails =
                    {
                        Status = StatusCodes.Status415UnsupportedMediaType,
                        Title = "Unsupported Media Type",
                        Detail = $"The request body's charset '{Shown(charset)}' is not one this service reads: send JSON in UTF-8 " +
                                 "('Content-Type: application/json' or 'application/json; charset=utf-8').",
                    },
                });
                return;
            }

            if (!media.Charset.Equals(charset, StringComparison.Ordinal))
            {
                media.Charset = charset;
                request.ContentType = media.ToString();
            }
        }

        await next(context);
    });

    /// <summary>
    /// A request that sends a body (a GET with a stray Content-Type header reads none, and is left alone). Over HTTP/2 and
    /// HTTP/3 a body need not announce its length, nor be chunked: the server knows whether one follows the headers.
    /// </summary>
    private static bool HasBody(HttpContext context)
    {
        var request = context.Request;
        return request.ContentLength > 0
               || (request.ContentLength is null
                   && (request.Headers.TransferEncoding.Count > 0 || context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody == true));
    }

    private static bool IsJson(MediaTypeHeaderValue media)
        => media.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)
           || media.Suffix.Equals("json", StringComparison.OrdinalIgnoreCase);

    private static bool Known(string charset)
    {
        if (charset.Length == 0)
        {
            return false;
        }

        try
        {
            _ = Encoding.GetEncoding(charset);
            return true;
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException)
        {
            // NotSupportedException: an encoding .NET knows but has turned off (UTF-7, SYSLIB0001), which answered 500.
            return false;
        }
    }

    /// <summary>The charset as the client sent it, cut and without control characters (it is echoed back).</summary>
    private static string Shown(string charset)
    {
        var printable = new string([.. charset.Where(c => !char.IsControl(c))]);
        return printable.Length > 40 ? printable[..40] + "..." : printable;
    }
}
