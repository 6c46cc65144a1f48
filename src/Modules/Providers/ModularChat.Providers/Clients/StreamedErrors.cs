using System.ClientModel.Primitives;
using System.Text.Json;

namespace ModularChat.Providers.Clients;

/// <summary>
/// The provider reported an error inside a streamed answer (an event <c>data: {"error": {...}}</c>, as OpenAI sends when
/// the model fails mid-stream); <see cref="Exception.Message"/> is the provider's own message, not yet scrubbed.
/// </summary>
internal sealed class ModelStreamErrorException(string message, string? type) : Exception(message)
{
    /// <summary>The error's <c>type</c> (or <c>code</c>), when it has one: <c>server_error</c>, ...</summary>
    public string? Type { get; } = type;
}

/// <summary>
/// Makes an error event in a streamed chat completion fail the stream. The OpenAI client reads such an event as an update
/// without choices and goes on (Microsoft.Extensions.AI passes it on as an update with no content), so the turn ended as
/// if the model had finished, with whatever text came before. This policy watches the server-sent events of a successful
/// <c>text/event-stream</c> response as the client reads them, and throws <see cref="ModelStreamErrorException"/> at the
/// first event whose JSON has a top-level <c>error</c>.
/// </summary>
internal sealed class StreamedErrorPolicy : PipelinePolicy
{
    public override void Process(PipelineMessage message, IReadOnlyList<PipelinePolicy> pipeline, int currentIndex)
    {
        ProcessNext(message, pipeline, currentIndex);
        Watch(message);
    }

    public override async ValueTask ProcessAsync(PipelineMessage message, IReadOnlyList<PipelinePolicy> pipeline, int currentIndex)
    {
        await ProcessNextAsync(message, pipeline, currentIndex).ConfigureAwait(false);
        Watch(message);
    }

    private static void Watch(PipelineMessage message)
    {
        if (message.Response is { IsError: false, ContentStream: { } stream } response
            && response.Headers.TryGetValue("Content-Type", out var type)
            && type?.TrimStart().StartsWith("text/event-stream", StringComparison.OrdinalIgnoreCase) == true)
        {
            response.ContentStream = new StreamedErrorWatcher(stream);
        }
    }
}

/// <summary>
/// Passes a server-sent event stream through unchanged, reading its lines as they go by; a <c>data:</c> line holding a
/// JSON object with an <c>error</c> property throws <see cref="ModelStreamErrorException"/>. Only lines that hold the
/// bytes <c>"error"</c> are parsed, and a line is kept only up to <see cref="MaxLine"/> bytes (an error event is short).
/// </summary>
internal sealed class StreamedErrorWatcher(Stream inner) : Stream
{
    private const int MaxLine = 64 * 1024;
    private static readonly byte[] DataField = "data:"u8.ToArray();
    private static readonly byte[] ErrorName = "\"error\""u8.ToArray();

    private readonly MemoryStream _line = new();
    private bool _lineTooLong;

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        var read = inner.Read(buffer);
        Scan(buffer[..read]);
        return read;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var read = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        Scan(buffer.Span[..read]);
        return read;
    }

    /// <summary>Reads <paramref name="bytes"/> into lines; the end of the stream (nothing read) ends the last line too.</summary>
    private void Scan(ReadOnlySpan<byte> bytes)
    {
        if (bytes.IsEmpty)
        {
            EndLine();
            return;
        }

        while (!bytes.IsEmpty)
        {
            var end = bytes.IndexOfAny((byte)'\n', (byte)'\r');
            var part = end < 0 ? bytes : bytes[..end];
            if (!_lineTooLong && _line.Length + part.Length <= MaxLine)
            {
                _line.Write(part);
            }
            else
            {
                _lineTooLong = true;
            }

            if (end < 0)
            {
                return;
            }

            EndLine();
            bytes = bytes[(end + 1)..];
        }
    }

    private void EndLine()
    {
        var tooLong = _lineTooLong;
        var line = _line.GetBuffer().AsSpan(0, (int)_line.Length);
        _lineTooLong = false;
        try
        {
            if (tooLong || !line.StartsWith(DataField) || line.IndexOf(ErrorName) < 0)
            {
                return;
            }

            var data = line[DataField.Length..];
            data = data.StartsWith(" "u8) ? data[1..] : data;
            if (Error(data) is { } error)
            {
                throw error;
            }
        }
        finally
        {
            _line.SetLength(0);
        }
    }

    /// <summary>The error that <paramref name="data"/> reports, if it is a JSON object with an <c>error</c> property that is not null.</summary>
    internal static ModelStreamErrorException? Error(ReadOnlySpan<byte> data)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(data.ToArray());
        }
        catch (JsonException)
        {
            return null; // not JSON: the client says so itself
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("error", out var error)
                || error.ValueKind is JsonValueKind.Null or JsonValueKind.False)
            {
                return null;
            }

            return error.ValueKind switch
            {
                JsonValueKind.String => new ModelStreamErrorException(Text(error) ?? "", null),
                JsonValueKind.Object => new ModelStreamErrorException(
                    Text(error, "message") ?? error.GetRawText(), Text(error, "type") ?? Text(error, "code")),
                _ => new ModelStreamErrorException(error.GetRawText(), null),
            };
        }
    }

    private static string? Text(JsonElement element, string? property = null)
    {
        if (property is not null && (element.ValueKind != JsonValueKind.Object || !element.TryGetProperty(property, out element)))
        {
            return null;
        }

        try
        {
            return element.ValueKind switch
            {
                JsonValueKind.String => element.GetString(),
                JsonValueKind.Number => element.GetRawText(),
                _ => null,
            };
        }
        catch (InvalidOperationException)
        {
            return null; // a string that is no UTF-16 text (a lone surrogate escape)
        }
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            inner.Dispose();
            _line.Dispose();
        }

        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        await inner.DisposeAsync().ConfigureAwait(false);
        _line.Dispose();
        await base.DisposeAsync().ConfigureAwait(false);
    }
}
