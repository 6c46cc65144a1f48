using System.Text;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Net.Http.Headers;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// The charset of a JSON body, settled before the endpoint reads it. The framework reads a JSON body in the charset its
/// Content-Type names, and one it cannot decode (<c>windows-1252</c>, a misspelling, or <c>"utf-8"</c> with quotes,
/// which HTTP allows) made it throw an exception no handler maps: a 500. An unknown charset now answers 415 naming it,
/// and a quoted one is read unquoted. A body in another charset the service knows is decoded strictly into UTF-8 here
/// (see <see cref="ReadAsUtf8Async"/>).
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
            var encoding = EncodingOf(charset);
            if (encoding is null)
            {
                await WriteProblemAsync(context, StatusCodes.Status415UnsupportedMediaType, "Unsupported Media Type",
                    $"The request body's charset '{Shown(charset)}' is not one this service reads: send JSON in UTF-8 " +
                    "('Content-Type: application/json' or 'application/json; charset=utf-8').");
                return;
            }

            if (encoding.CodePage != Encoding.UTF8.CodePage)
            {
                if (!await ReadAsUtf8Async(context, encoding, media, charset))
                {
                    return;
                }
            }
            else if (!media.Charset.Equals(charset, StringComparison.Ordinal))
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

    /// <summary>The encoding a charset names, or null for one this service cannot read.</summary>
    private static Encoding? EncodingOf(string charset)
    {
        if (charset.Length == 0)
        {
            return null;
        }

        try
        {
            return Encoding.GetEncoding(charset);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException)
        {
            // NotSupportedException: an encoding .NET knows but has turned off (UTF-7, SYSLIB0001), which answered 500.
            return null;
        }
    }

    /// <summary>
    /// Replaces a body in another charset than UTF-8 (latin1, utf-16, us-ascii, ...) by its text in UTF-8, decoded
    /// strictly. The framework decoded it with the charset's replacement fallback, so that bytes the charset does not
    /// have (an é sent as us-ascii, a lone surrogate or an odd byte in utf-16) were stored as '?' or U+FFFD: text the
    /// client never sent, accepted as if it had. Such a body now answers 400 naming the charset, and nothing is stored.
    /// The body is read whole (as the binder would), within <c>Limits:MaxRequestBodyBytes</c>.
    /// </summary>
    private static async Task<bool> ReadAsUtf8Async(HttpContext context, Encoding encoding, MediaTypeHeaderValue media, string charset)
    {
        var request = context.Request;
        var strict = Encoding.GetEncoding(encoding.CodePage, EncoderFallback.ExceptionFallback, DecoderFallback.ExceptionFallback);
        var utf8 = new MemoryStream();
        try
        {
            await using var decoded = Encoding.CreateTranscodingStream(request.Body, strict, Encoding.UTF8, leaveOpen: true);
            await decoded.CopyToAsync(utf8, context.RequestAborted);
        }
        catch (DecoderFallbackException)
        {
            await WriteProblemAsync(context, StatusCodes.Status400BadRequest, "The request body is malformed.",
                $"The request body is not valid '{Shown(charset)}' text, the charset its Content-Type names: it holds bytes " +
                "that charset does not have. Nothing was stored; send JSON in UTF-8 ('Content-Type: application/json').");
            return false;
        }

        utf8.Position = 0;
        request.Body = utf8;
        context.Response.RegisterForDispose(utf8);
        request.ContentLength = utf8.Length;
        media.Charset = "utf-8";
        request.ContentType = media.ToString();
        return true;
    }

    internal static Task WriteProblemAsync(HttpContext context, int status, string title, string detail)
    {
        context.Response.StatusCode = status;
        return context.RequestServices.GetRequiredService<IProblemDetailsService>().WriteAsync(new ProblemDetailsContext
        {
            HttpContext = context,
            ProblemDetails = { Status = status, Title = title, Detail = detail },
        }).AsTask();
    }

    /// <summary>The charset as the client sent it, cut and without control characters (it is echoed back).</summary>
    internal static string Shown(string charset)
    {
        var printable = new string([.. charset.Where(c => !char.IsControl(c))]);
        return printable.Length > 40 ? printable[..40] + "..." : printable;
    }
}
