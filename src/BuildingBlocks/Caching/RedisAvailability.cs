using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace ModularChat.BuildingBlocks.Caching;

/// <summary>
/// Whether this node talks to Redis right now. Redis is only a cache: a command that fails, or gets no answer within the
/// client's timeout, must not fail the request that made it. After such a failure the node works without Redis for
/// <see cref="RetryInterval"/> (otherwise every request would wait out the timeout again, once per command), then tries
/// it again. Without Redis configured, it is never used.
/// </summary>
public sealed partial class RedisAvailability
{
    private readonly ILogger<RedisAvailability> _logger;
    private readonly TimeProvider _clock;
    private long _retryAtTicks;
    private int _failing;

    public RedisAvailability(IConnectionMultiplexer? redis, TimeSpan retryInterval, ILogger<RedisAvailability> logger, TimeProvider? clock = null)
    {
        Redis = redis;
        RetryInterval = retryInterval;
        _logger = logger;
        _clock = clock ?? TimeProvider.System;
        if (redis is not null)
        {
            // A Redis that went away (stopped, unreachable) closes the connection: no command runs then (not Usable), so
            // without these nothing would say that it failed, nor that it came back.
            redis.ConnectionFailed += (_, e) =>
            {
                if (e.ConnectionType == ConnectionType.Interactive && Interlocked.Exchange(ref _failing, 1) == 0)
                {
                    LogFailing(_logger, RetryInterval, e.Exception);
                }
            };
            redis.ConnectionRestored += (_, e) =>
            {
                if (e.ConnectionType == ConnectionType.Interactive)
                {
                    Succeeded();
                }
            };
        }
    }

    /// <summary>The configured Redis, if any.</summary>
    public IConnectionMultiplexer? Redis { get; }

    /// <summary>How long the node works without Redis after a command failed or timed out.</summary>
    public TimeSpan RetryInterval { get; }

    /// <summary>Redis is configured and connected, and no command failed within the last <see cref="RetryInterval"/>.</summary>
    public bool Usable => Redis is { IsConnected: true }
        && (Volatile.Read(ref _failing) == 0 || _clock.GetUtcNow().UtcTicks >= Interlocked.Read(ref _retryAtTicks));

    /// <summary>
    /// What a Redis command throws when Redis fails or does not answer in time (StackExchange.Redis's timeout is a
    /// <see cref="TimeoutException"/>, not a <see cref="RedisException"/>).
    /// </summary>
    public static bool IsFailure(Exception exception) => exception is RedisException or RedisTimeoutException;

    /// <summary>A command failed: Redis is left alone for <see cref="RetryInterval"/>.</summary>
    public void Failed(Exception exception)
    {
        Interlocked.Exchange(ref _retryAtTicks, _clock.GetUtcNow().UtcTicks + RetryInterval.Ticks);
        if (Interlocked.Exchange(ref _failing, 1) == 0)
        {
            LogFailing(_logger, RetryInterval, exception);
        }
    }

    /// <summary>A command succeeded.</summary>
    public void Succeeded()
    {
        if (Volatile.Read(ref _failing) == 1 && Interlocked.Exchange(ref _failing, 0) == 1)
        {
            LogBack(_logger);
        }
    }

    /// <summary>
    /// Runs <paramref name="command"/> when Redis is usable. A failure or timeout is recorded (<see cref="Failed"/>) and,
    /// like an unusable Redis, gives <paramref name="unavailable"/>; success is recorded too.
    /// </summary>
    public Task<T> TryAsync<T>(Func<Task<T>> command, T unavailable)
        => Usable ? RecordedAsync(command, unavailable) : Task.FromResult(unavailable);

    /// <summary>Runs <paramref name="command"/>, recording its success or failure; a failure gives <paramref name="unavailable"/>.</summary>
    private async Task<T> RecordedAsync<T>(Func<Task<T>> command, T unavailable)
    {
        try
        {
            var result = await command().ConfigureAwait(false);
            Succeeded();
            return result;
        }
        catch (Exception e) when (IsFailure(e))
        {
            Failed(e);
            return unavailable;
        }
    }

    /// <summary>
    /// Runs <paramref name="command"/> when Redis is connected, even within the <see cref="RetryInterval"/> after another
    /// command failed: for the writes other nodes rely on (a cache generation's bump), which one slow read must not hold
    /// back. Waits for it at most <paramref name="wait"/>, then answers false (as for a failure) while the command goes
    /// on; its outcome is recorded either way.
    /// </summary>
    public async Task<bool> TryDespiteBackoffAsync(Func<Task> command, TimeSpan wait)
    {
        if (Redis is not { IsConnected: true })
        {
            return false;
        }

        var run = RecordedAsync(async () =>
        {
            await command().ConfigureAwait(false);
            return true;
        }, false);
        try
        {
            return await run.WaitAsync(wait, _clock).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    /// <inheritdoc cref="TryAsync{T}(Func{Task{T}}, T)"/>
    public Task TryAsync(Func<Task> command) => TryAsync(async () =>
    {
        await command().ConfigureAwait(false);
        return true;
    }, false);

    /// <inheritdoc cref="TryAsync{T}(Func{Task{T}}, T)"/>
    public T Try<T>(Func<T> command, T unavailable)
    {
        if (!Usable)
        {
            return unavailable;
        }

        try
        {
            var result = command();
            Succeeded();
            return result;
        }
        catch (Exception e) when (IsFailure(e))
        {
            Failed(e);
            return unavailable;
        }
    }

    /// <inheritdoc cref="TryAsync{T}(Func{Task{T}}, T)"/>
    public void Try(Action command) => Try(() =>
    {
        command();
        return true;
    }, false);

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "Redis is failing: this node caches in process only and keeps cache generations to itself, trying Redis again every {RetryInterval}")]
    private static partial void LogFailing(ILogger logger, TimeSpan retryInterval, Exception? exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Redis answers again: cache generations are shared across nodes")]
    private static partial void LogBack(ILogger logger);
}
