using System.Globalization;
using System.Net;
using ModularChat.BuildingBlocks.Validation;

namespace ModularChat.Providers.Network;

/// <summary>
/// Bounds what one response from a tenant-chosen server may make this service read: a provider or MCP server that
/// answers with gigabytes (a tool result, a tool list, a model answer) would otherwise be read into memory whole. A
/// response over <paramref name="maxBytes"/> fails with an <see cref="HttpRequestException"/> naming the limit, as soon as
/// its declared length says so or its body passes it.
/// </summary>
internal sealed class ResponseSizeLimit(Func<long> maxBytes) : DelegatingHandler
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var response = await base.SendAsync(request, cancellationToken);
        var max = maxBytes();
        var host = request.RequestUri?.Host ?? "the server";
        if (response.Content.Headers.ContentLength > max)
        {
            response.Dispose();
            throw TooLarge(host, max);
        }

        response.Content = new LimitedContent(response.Content, max, host);
        return response;
    }

    internal static HttpRequestException TooLarge(string host, long max) => new(
        HttpRequestError.ResponseEnded,
        $"The response from {host} is larger than {max.ToString("N0", CultureInfo.InvariantCulture)} bytes (OutboundNetwork:MaxResponseBytes).");

    private sealed class LimitedContent : HttpContent
    {
        private readonly HttpContent _inner;
        private readonly long _max;
        private readonly string _host;

        public LimitedContent(HttpContent inner, long max, string host)
        {
            _inner = inner;
            _max = max;
            _host = host;
            foreach (var (name, values) in inner.Headers)
            {
                Headers.TryAddWithoutValidation(name, values);
            }
        }

        protected override async Task<Stream> CreateContentReadStreamAsync(CancellationToken cancellationToken)
            => new LimitedReadStream(await _inner.ReadAsStreamAsync(cancellationToken), _max, () => TooLarge(_host, _max), ownsInner: true);

        protected override Task<Stream> CreateContentReadStreamAsync() => CreateContentReadStreamAsync(CancellationToken.None);

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            await using var body = await CreateContentReadStreamAsync(cancellationToken);
            await body.CopyToAsync(stream, cancellationToken);
        }

        protected override bool TryComputeLength(out long length)
        {
            length = _inner.Headers.ContentLength ?? 0;
            return _inner.Headers.ContentLength is not null;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _inner.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
