using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Wolverine;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// The test fixture's own promise: a node whose start fails (as a solo-mode start that deadlocks on the shared inbox does)
/// leaves nothing running behind it. Its host is never handed back, so only the fixture can stop what it had started; a
/// half-started node would otherwise keep claiming the shared inbox's envelopes for the rest of the run.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class FailedNodeStartTests(ConversationsApp app)
{
    [Fact]
    public async Task A_node_whose_start_fails_after_its_background_work_started_is_stopped_and_disposed()
    {
        var worker = new Worker();
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(services: services =>
        {
            // After the service's own hosted services, Wolverine's among them: everything else has started when the start fails.
            services.AddSingleton<IHostedService>(provider => worker.On(provider));
            services.AddSingleton<IHostedService, FailingStart>();
        }));

        Assert.Contains(Exceptions.Flatten(error), e => e.Message == FailingStart.Message);
        Assert.True(worker.Started.Task.IsCompletedSuccessfully, "the background work started before the failing start");
        await worker.Stopped.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Throws<ObjectDisposedException>(() => worker.Services!.GetRequiredService<IMessageBus>());
    }

    private sealed class Worker : BackgroundService
    {
        public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Stopped { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public IServiceProvider? Services { get; private set; }

        public Worker On(IServiceProvider services)
        {
            Services = services;
            return this;
        }

        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            Started.TrySetResult();
            try
            {
                await Task.Delay(Timeout.Infinite, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                Stopped.TrySetResult();
            }
        }
    }

    private sealed class FailingStart : IHostedService
    {
        public const string Message = "This node's start fails on purpose (test).";

        public Task StartAsync(CancellationToken cancellationToken) => throw new InvalidOperationException(Message);

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
