using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace ModularChat.Testing;

/// <summary>
/// One attempt to start a test host: remembers the host's services so that, when the start throws (and so hands no host
/// back), what it had started can be stopped and disposed. The generic host leaves the hosted services it started running
/// when a later one fails to start.
/// </summary>
internal sealed class StartAttempt
{
    private IServiceProvider? _services;

    /// <summary>Adds to the host's registrations what captures its services (a hosted service that does nothing).</summary>
    public void Register(IServiceCollection services)
        => services.AddSingleton<IHostedService>(provider =>
        {
            _services = provider;
            return new Capture();
        });

    /// <summary>Stops the attempt's host (its hosted services, last first) and disposes it with its services.</summary>
    public async Task UndoAsync()
    {
        if (_services is not { } services)
        {
            return;
        }

        // The generic host is itself a service: stopped through it, its background services' cancellation is no error.
        var host = services.GetRequiredService<IHost>();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await host.StopAsync(timeout.Token);
        }
        finally
        {
            if (host is IAsyncDisposable disposable)
            {
                await disposable.DisposeAsync();
            }
            else
            {
                host.Dispose();
            }
        }
    }

    private sealed class Capture : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
