using Microsoft.Extensions.Hosting;

namespace ModularChat.Testing;

/// <summary>
/// Stands for Kestrel draining its requests when the host stops (SIGTERM): registered last, it is stopped first, and its
/// stop ends when the test releases it (or at the host's shutdown timeout). Meanwhile <c>ApplicationStopping</c> has fired
/// and the node runs on, as a node does while its requests drain.
/// </summary>
public sealed class RequestsDraining : IHostedService
{
    private readonly TaskCompletionSource _began = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes when the host began to stop (its other hosted services are still running).</summary>
    public Task Began => _began.Task;

    public void Release() => _released.TrySetResult();

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _began.TrySetResult();
        await _released.Task.WaitAsync(cancellationToken);
    }
}
