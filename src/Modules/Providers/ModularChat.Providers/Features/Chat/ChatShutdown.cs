using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace ModularChat.Providers.Features.Chat;

/// <summary>
/// Ends the chat turns still waiting for their model when the node stops. A model can take a minute to answer while
/// the host waits at most its shutdown timeout (30 s by default) for requests to finish, then drops them: their clients
/// got no answer at all. So when the node starts stopping, turns get <see cref="ChatTurnOptions.ShutdownGrace"/> to
/// finish; those still running then stop and answer 503 with Retry-After (or an <c>error</c> event when streaming), in
/// time for the answer to reach the client. Their user message is stored: sent again with the same <c>externalId</c> it
/// is answered then.
/// </summary>
internal sealed class ChatShutdown : IDisposable
{
    /// <summary>
    /// What the host's shutdown timeout keeps beyond <see cref="ChatTurnOptions.ShutdownGrace"/> (it is raised to at least
    /// their sum): the time for the stopped turns' 503s to be written and their requests to end.
    /// </summary>
    public static readonly TimeSpan AnswerTime = TimeSpan.FromSeconds(10);

    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenRegistration _registration;
    private ITimer? _grace;

    public ChatShutdown(IHostApplicationLifetime lifetime, IOptions<ChatTurnOptions> options, TimeProvider clock)
    {
        var grace = options.Value.ShutdownGrace;
        // The grace runs on the host's clock, as the turns' own deadlines do (CancelAfter would run it on the wall clock).
        _registration = lifetime.ApplicationStopping.Register(() => _grace ??= clock.CreateTimer(_ => Stop(), null, grace, Timeout.InfiniteTimeSpan));
    }

    /// <summary>Cancelled <see cref="ChatTurnOptions.ShutdownGrace"/> after the node began to stop.</summary>
    public CancellationToken Token => _stopping.Token;

    /// <summary>Whether the node is stopping and <see cref="ChatTurnOptions.ShutdownGrace"/> has passed: turns still running are stopped.</summary>
    public bool HasStopped => _stopping.IsCancellationRequested;

    /// <summary>Whether <paramref name="error"/> is a turn stopped by the node stopping (its client is still there).</summary>
    public bool Stopped(Exception error, CancellationToken clientGone)
        => error is OperationCanceledException && HasStopped && !clientGone.IsCancellationRequested;

    public void Dispose()
    {
        _registration.Dispose(); // waits for its callback: no timer is made after this
        _grace?.Dispose();
        _stopping.Dispose();
    }

    private void Stop()
    {
        try
        {
            _stopping.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Disposed with the container while stopping: nothing is left to stop.
        }
    }
}
