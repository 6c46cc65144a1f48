namespace ModularChat.BuildingBlocks.Validation;

/// <summary>
/// A read-only view of <paramref name="inner"/> that throws <paramref name="tooLarge"/>'s exception the moment more than
/// <paramref name="maxBytes"/> have been read: a body without a declared length is cut off at the limit instead of being
/// read whole. Disposing it disposes <paramref name="inner"/> when <paramref name="ownsInner"/>.
/// </summary>
public sealed class LimitedReadStream(Stream inner, long maxBytes, Func<Exception> tooLarge, bool ownsInner = false)
    : ReadOnlyWrapperStream(inner, ownsInner)
{
    private long _read;

    public override long Position { get => _read; set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) => Count(Inner.Read(buffer, offset, count));

    public override int Read(Span<byte> buffer) => Count(Inner.Read(buffer));

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        => Count(await Inner.ReadAsync(buffer, cancellationToken));

    private int Count(int read)
    {
        _read += read;
        return _read > maxBytes ? throw tooLarge() : read;
    }
}
