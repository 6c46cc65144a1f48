namespace ModularChat.Providers.Features.Chat;

/// <summary>
/// A chat turn's deadline: <see cref="ChatTurnOptions.TurnTimeout"/> from the model's first call, for its model and tool
/// calls together, on the host's <see cref="TimeProvider"/> (as every other timer of the module, so a test's clock moves
/// it too); its <see cref="Token"/> is also cancelled with the turn's own (the client left, the node stops).
/// </summary>
internal sealed class TurnDeadline : IDisposable
{
    private readonly CancellationTokenSource _timer;
    private readonly CancellationTokenSource _linked;
    private readonly CancellationToken _turn;

    public TurnDeadline(TimeSpan timeout, TimeProvider clock, CancellationToken turn)
    {
        Timeout = timeout;
        _turn = turn;
        _timer = new CancellationTokenSource(timeout, clock);
        _linked = CancellationTokenSource.CreateLinkedTokenSource(_timer.Token, turn);
    }

    public TimeSpan Timeout { get; }

    /// <summary>For the model and tool calls: cancelled at the deadline or with the turn.</summary>
    public CancellationToken Token => _linked.Token;

    /// <summary>Whether the deadline passed while the turn's caller still waits (not when the client left or the node stops).</summary>
    public bool Passed => _timer.IsCancellationRequested && !_turn.IsCancellationRequested;

    public void Dispose()
    {
        _linked.Dispose();
        _timer.Dispose();
    }
}
