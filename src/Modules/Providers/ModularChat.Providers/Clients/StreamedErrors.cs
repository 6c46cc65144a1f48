using System.ClientModel.Primitives;
using System.Text.Json;

namespace ModularChat.Providers.Clients;

/// <summary>
/// The provider reported an error in an answer of status 200: inside a streamed answer (an event
/// <c>data: {"error": {...}}</c>, as OpenAI sends when the model fails mid-stream), or as the whole body of a plain one
/// (as some gateways answer when the model behind them fails or a quota is spent); <see cref="Exception.Message"/> is the
/// provider's own message, not yet scrubbed.
/// </summary>
internal sealed class ModelReportedErrorException(string message, string? type, bool streamed) : Exception(message)
{
    /// <summary>The error's <c>type</c> (or <c>code</c>), when it has one: <c>server_error</c>, ...</summary>
    public string? Type { get; } = type;

    /// <summary>Whether it came in a stream (after some of the answer, perhaps), rather than as the whole answer.</summary>
    public bool Streamed { get; } = streamed;
}

/// <summary>
/// Makes an error reported in an answer of status 200 fail the call with the provider's own words. The OpenAI client reads
/// an error event of a stream as an update without choices and goes on (Microsoft.Extensions.AI passes it on as an update
/// with no content), so the turn ended as if the model had finished, with whatever text came before; and it reads a plain
/// answer <c>{"error": {...}}</c> as a chat completion without choices, which said nothing of the provider's reason. This
/// policy watches the server-sent events of a successful <c>text/event-stream</c> response as the client reads them, and
/// looks into a successful buffered (plain) response, and throws <see cref="ModelReportedErrorException"/> at the first
/// JSON with a top-level <c>error</c>.
/// </summary>
internal sealed class StreamedErrorPolicy : PipelinePolicy
{
    public override void Process(PipelineMessage message, IReadOnlyList<PipelinePolicy> pipeline, int currentIndex)
    {
        ProcessNext(message, pipeline, currentIndex);
        var plain = PlainAnswerToAStream(message);
        plain?.BufferContent();
        Watch(message, read: message.BufferResponse || plain is not null);
    }

    public override async ValueTask ProcessAsync(PipelineMessage message, IReadOnlyList<PipelinePolicy> pipeline, int currentIndex)
    {
        await ProcessNextAsync(message, pipeline, currentIndex).ConfigureAwait(false);
        var plain = PlainAnswerToAStream(message);
        if (plain is not null)
        {
            await plain.BufferContentAsync(message.CancellationToken).ConfigureAwait(false);
        }

        Watch(message, read: message.BufferResponse || plain is not null);
    }

    /// <summary>
    /// The response, when a stream was asked for and a successful plain JSON answer came: a gateway's error, as a rule. It
    /// is read whole (the client then reads the copy), so that its words are not lost as "a stream that ended empty".
    /// </summary>
    private static PipelineResponse? PlainAnswerToAStream(PipelineMessage message)
        => !message.BufferResponse && message.Response is { IsError: false } response
            && ContentType(response)?.Contains("json", StringComparison.OrdinalIgnoreCase) == true
            ? response
            : null;

    /// <param name="read">Whether the whole answer has been read (a plain call, or a plain answer to a stream request).</param>
    private static void Watch(PipelineMessage message, bool read)
    {
        if (message.Response is not { IsError: false } response)
        {
            return;
        }

        if (read)
        {
            // Only an answer that names "error" is parsed.
            var body = response.Content.ToMemory().Span;
            if (body.IndexOf(StreamedErrorWatcher.ErrorName) >= 0 && StreamedErrorWatcher.Error(body, streamed: false) is { } error)
            {
                throw error;
            }
        }
        else if (response.ContentStream is { } stream
            && ContentType(response)?.TrimStart().StartsWith("text/event-stream", StringComparison.OrdinalIgnoreCase) == true)
        {
            response.ContentStream = new StreamedErrorWatcher(stream);
        }
    }

    private static string? ContentType(PipelineResponse response)
        => response.Headers.TryGetValue("Content-Type", out var type) ? type : null;
}

/// <summary>
/// Passes a server-sent event stream through unchanged, reading its lines as they go by; a <c>data:</c> line holding a
/// JSON object with an <c>error</c> property throws <see cref="ModelReportedErrorException"/>. Only lines that hold the
/// bytes <c>"error"</c> are parsed, and a line is kept only up to <see cref="MaxLine"/> bytes (an error event is short).
/// A longer line that begins as an error (<c>{"error":</c>, its first property) is an error all the same, read as far as
/// it was kept: skipped, it let the text streamed before it pass as the whole answer.
/// </summary>
internal sealed class StreamedErrorWatcher(Stream inner) : Stream
{
    private const int MaxLine = 64 * 1024;
    private static readonly byte[] DataField = "data:"u8.ToArray();
    /// <summary>The bytes a line (or a plain answer) must hold to be parsed at all.</summary>
    internal static ReadOnlySpan<byte> ErrorName => "\"error\""u8;

    private readonly MemoryStream _line = new();
    private bool _lineTooLong;
    private long _lineLength;

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
            _lineLength += part.Length;
            if (!_lineTooLong && _line.Length + part.Length <= MaxLine)
            {
                _line.Write(part);
            }
            else
            {
                // The line's start is kept (up to MaxLine), for an error that begins it.
                _line.Write(part[..(int)Math.Min(part.Length, Math.Max(0, MaxLine - _line.Length))]);
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
        var length = _lineLength;
        var line = _line.GetBuffer().AsSpan(0, (int)_line.Length);
        _lineTooLong = false;
        _lineLength = 0;
        try
        {
            if (!line.StartsWith(DataField) || line.IndexOf(ErrorName) < 0)
            {
                return;
            }

            var data = line[DataField.Length..];
            data = data.StartsWith(" "u8) ? data[1..] : data;
            if ((tooLong ? LongError(data, length) : Error(data, streamed: true)) is { } error)
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
    internal static ModelReportedErrorException? Error(ReadOnlySpan<byte> data, bool streamed)
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
                JsonValueKind.String => new ModelReportedErrorException(Text(error) ?? "", null, streamed),
                JsonValueKind.Object => new ModelReportedErrorException(
                    Text(error, "message") ?? error.GetRawText(), Text(error, "type") ?? Text(error, "code"), streamed),
                _ => new ModelReportedErrorException(error.GetRawText(), null, streamed),
            };
        }
    }

    /// <summary>
    /// The error that a data line longer than <see cref="MaxLine"/> reports, read from its <paramref name="start"/>: when it
    /// begins as a JSON object whose first property is <c>error</c> (not null or false), with the <c>message</c> and
    /// <c>type</c> (or <c>code</c>) found in that start. Null when it begins as anything else (a long chunk of the answer).
    /// </summary>
    internal static ModelReportedErrorException? LongError(ReadOnlySpan<byte> start, long length)
    {
        var reader = new Utf8JsonReader(start, isFinalBlock: false, state: default);
        string? message = null, type = null, code = null;
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject
                || !reader.Read() || reader.TokenType != JsonTokenType.PropertyName || !reader.ValueTextEquals("error"u8)
                || !reader.Read())
            {
                return null;
            }

            switch (reader.TokenType)
            {
                case JsonTokenType.Null or JsonTokenType.False:
                    return null;
                case JsonTokenType.String:
                    message = reader.GetString();
                    break;
                case JsonTokenType.StartObject:
                    while (reader.Read() && !(reader.TokenType == JsonTokenType.EndObject && reader.CurrentDepth == 1))
                    {
                        if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth != 2)
                        {
                            continue;
                        }

                        var name = reader.GetString();
                        if (!reader.Read())
                        {
                            break;
                        }

                        if (reader.TokenType == JsonTokenType.String)
                        {
                            var value = reader.GetString();
                            (message, type, code) = name switch
                            {
                                "message" => (value, type, code),
                                "type" => (message, value, code),
                                "code" => (message, type, value),
                                _ => (message, type, code),
                            };
                        }
                    }

                    break;
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            // Not JSON past some point, or a string that is no text: what was read says enough.
        }

        return new ModelReportedErrorException(
            message ?? $"an error event too long to read ({length} bytes)", type ?? code, streamed: true);
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
