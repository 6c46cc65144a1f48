using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace ModularChat.BuildingBlocks.Options;

/// <summary>
/// A start refused for a known reason (a setting, or what the settings point at): its message says what to change, so the
/// Host prints that message once and ends with exit code 1, without a stack trace. An <see cref="InvalidOperationException"/>,
/// as these refusals were before they had a type of their own.
/// </summary>
public sealed class StartRefusedException(string message, Exception? innerException = null) : InvalidOperationException(message, innerException)
{
    /// <summary>
    /// The messages of <paramref name="error"/> when it is a known start refusal (this type, a refused option, or several of
    /// them at once), or null for any other exception (a fault, which keeps its stack trace).
    /// </summary>
    public static IReadOnlyList<string>? Reasons(Exception error) => error switch
    {
        StartRefusedException refused => [refused.Message],
        OptionsValidationException invalid => [.. invalid.Failures],
        AggregateException { InnerExceptions.Count: > 0 } several when several.InnerExceptions.Select(Reasons).ToList() is var reasons
                                                                       && reasons.All(r => r is not null)
            => [.. reasons.SelectMany(r => r!)],
        System.Reflection.TargetInvocationException { InnerException: { } inner } => Reasons(inner),
        _ => null,
    };
}

/// <summary>
/// A check of this node's settings against what they name (the database's text-search configurations, its key ring), made
/// when the node starts but before it starts anything: a node refused by it never registers itself, runs no job and takes
/// no message. Throw <see cref="StartRefusedException"/> to refuse the start.
/// </summary>
public interface IStartCheck
{
    Task CheckAsync(CancellationToken cancellationToken);
}

/// <summary>Runs the <see cref="IStartCheck"/>s once, before any hosted service starts.</summary>
public sealed class StartChecks(IEnumerable<IStartCheck> checks) : IHostedLifecycleService
{
    private bool _passed;

    /// <summary>
    /// The checks, unless they passed already (the Host makes them before it starts the host, where a refusal is printed
    /// without the host's own report of a failed start; the host's start makes them for a host started otherwise).
    /// </summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        if (_passed)
        {
            return;
        }

        foreach (var check in checks)
        {
            await check.CheckAsync(cancellationToken);
        }

        _passed = true;
    }

    /// <summary>Before every hosted service's start (none of Wolverine's, Marten's or ours implements this stage).</summary>
    public Task StartingAsync(CancellationToken cancellationToken) => RunAsync(cancellationToken);

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
