namespace ModularChat.Providers;

/// <summary>
/// A deadline <see cref="Timeout"/> from now on the host's <see cref="TimeProvider"/>, linked with the caller's token: a
/// chat turn's (Chat:TurnTimeout), an MCP connection's or tool call's (Mcp:ConnectTimeout, Mcp:ToolCallTimeout), a test's.
/// Not <see cref="CancellationTokenSource.CancelAfter(TimeSpan)"/>, which runs on the wall clock: one clock rules every
/// deadline of the module, and a test's clock moves them all.
/// </summary>
internal sealed class ClockDeadline : IDisposable
{
    private readonly CancellationTokenSource _timer;
    private readonly CancellationTokenSource _linked;
    private readonly CancellationToken _caller;

    public ClockDeadline(TimeSpan timeout, TimeProvider clock, CancellationToken caller)
    {
        Timeout = timeout;
        _caller = caller;
        _timer = new CancellationTokenSource(timeout, clock);
        _linked = CancellationTokenSource.CreateLinkedTokenSource(_timer.Token, caller);
    }

    public TimeSpan Timeout { get; }

    /// <summary>For the calls the deadline bounds: cancelled at the deadline or with the caller's token.</summary>
    public CancellationToken Token => _linked.Token;

    /// <summary>Whether the deadline passed while the caller still waits (not when the caller's token was cancelled: the client left, the node stops).</summary>
    public bool Passed => _timer.IsCancellationRequested && !_caller.IsCancellationRequested;

    public void Dispose()
    {
        _linked.Dispose();
        _timer.Dispose();
    }
}
