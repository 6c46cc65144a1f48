using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.RequestDecompression;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Validation;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// Request bodies a client compressed (<c>Content-Encoding: gzip</c>, <c>br</c> or <c>deflate</c>), decompressed as they
/// are read by ASP.NET Core's request decompression. Used before the body limit (<see cref="RequestBodyLimit"/>), so
/// <c>Limits:MaxRequestBodyBytes</c> bounds what a body decompresses to: a few kilobytes cannot make the service read
/// gigabytes. An encoding it does not read, or several, answer 415 naming them (such a body was read as JSON and answered
/// "not valid JSON"); a body that is not valid data of its encoding answers 400 saying so.
/// </summary>
internal static class RequestEncodings
{
    public static IServiceCollection AddRequestEncodings(this IServiceCollection services) => services.AddRequestDecompression();

    public static IApplicationBuilder UseRequestEncodings(this IApplicationBuilder app)
    {
        app.Use(async (context, next) =>
        {
            var sent = context.Request.Headers.ContentEncoding;
            if (sent.Count > 0)
            {
                var names = sent.SelectMany(v => (v ?? "").Split(',')).Select(v => v.Trim())
                    .Where(v => v.Length > 0 && !v.Equals("identity", StringComparison.OrdinalIgnoreCase)).ToList();
                var known = context.RequestServices.GetRequiredService<IOptions<RequestDecompressionOptions>>().Value.DecompressionProviders.Keys;
                if (names.Count > 1 || names.Any(n => !known.Contains(n, StringComparer.OrdinalIgnoreCase)))
                {
                    await JsonCharset.WriteProblemAsync(context, StatusCodes.Status415UnsupportedMediaType, "Unsupported Media Type",
                        $"The request body's Content-Encoding '{JsonCharset.Shown(string.Join(", ", names))}' is not one this service reads: " +
                        $"send the body uncompressed, or compressed once with one of {string.Join(", ", known.Order(StringComparer.Ordinal))}.");
                    return;
                }

                if (names.Count == 0)
                {
                    context.Request.Headers.ContentEncoding = default; // identity: nothing to undo
                }
                else
                {
                    // One encoding, with identity around it or not: the decompression reads a header of that one name only.
                    context.Request.Headers.ContentEncoding = names[0];
                    context.Features.Set(new CompressedBody(names[0]));
                }
            }

            await next(context);
        });

        app.UseRequestDecompression();

        // After the decompression: what its stream throws on data that is not of its encoding, said to the client.
        return app.Use(async (context, next) =>
        {
            if (context.Features.Get<CompressedBody>() is { } compressed)
            {
                context.Request.Body = new DecodedBody(context.Request.Body, compressed.Encoding, context.Features);
            }

            await next(context);
        });
    }

    /// <summary>The encoding a request's body came in (set before the decompression removes the header).</summary>
    private sealed record CompressedBody(string Encoding);

    /// <summary>
    /// Turns what the decompression throws on data that is not of its encoding into a 400 naming the encoding: gzip's and
    /// deflate's <see cref="InvalidDataException"/>, Brotli's <see cref="InvalidOperationException"/> ("Decoder ran into
    /// invalid data").
    /// </summary>
    private sealed class DecodedBody(Stream inner, string encoding, IFeatureCollection features) : ReadOnlyWrapperStream(inner, ownsInner: false)
    {
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            try
            {
                return await Inner.ReadAsync(buffer, cancellationToken);
            }
            catch (Exception e) when (IsInvalidData(e))
            {
                throw Invalid(e);
            }
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            try
            {
                return Inner.Read(buffer);
            }
            catch (Exception e) when (IsInvalidData(e))
            {
                throw Invalid(e);
            }
        }

        private bool IsInvalidData(Exception e)
            => e is InvalidDataException || (e is InvalidOperationException && string.Equals(encoding, "br", StringComparison.OrdinalIgnoreCase));

        private BadHttpRequestException Invalid(Exception e)
        {
            var detail = $"The request body is not valid '{encoding}' data, as its Content-Encoding says. Nothing was stored.";
            features.Set(new StatusCodeProblems.BodyProblem(detail)); // the binder answers a bare 400: its detail comes from here
            return new BadHttpRequestException(detail, StatusCodes.Status400BadRequest, e);
        }
    }
}
