using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Background;
using Npgsql;

namespace ModularChat.Search.Storage;

/// <summary>
/// Removes the tombstones of deleted conversations (and the logged ranges of deleted messages) once <see cref="SearchOptions.TombstoneLifetime"/> has passed, so that
/// in the end nothing of a deleted conversation remains in the database. Every node runs it; the delete is idempotent. A
/// stopping node starts no round (the other nodes' rounds do the same delete); one that runs finishes. While the database
/// is away its rounds fail: the first failure is logged, then less and less, and the rounds draw apart
/// (<see cref="RepeatedFailures"/>); a warning every round (every second with a short lifetime) flooded the log.
/// </summary>
internal sealed class TombstoneCleanup(
    SearchDatabase database, IOptions<SearchOptions> options, TimeProvider clock, NodeStopping nodeStopping, ILogger<TombstoneCleanup> logger)
    : SharedBackgroundWork(nodeStopping)
{
    protected override async Task ExecuteAsync(CancellationToken newWork, CancellationToken stoppingToken)
    {
        var tombstoneLifetime = options.Value.TombstoneLifetime;
        var interval = TimeSpan.FromTicks(Math.Clamp(tombstoneLifetime.Ticks / 2, TimeSpan.FromMilliseconds(100).Ticks, TimeSpan.FromMinutes(5).Ticks));
        var failures = new RepeatedFailures(logger, "The search tombstone clean-up", interval);
        while (true)
        {
            await Task.Delay(failures.Wait, clock, newWork);
            try
            {
                await RemoveExpiredAsync(tombstoneLifetime, stoppingToken);
                failures.Succeeded();
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                failures.Failed(e);
            }
        }
    }

    internal async Task<int> RemoveExpiredAsync(TimeSpan lifetime, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            $"""
            with tombstones as (delete from {database.Schema.Deletions} where deleted_at < $1 returning 1),
                 ranges as (delete from {database.Schema.RemovedRanges} where removed_at < $1 returning 1)
            select (select count(*) from tombstones) + (select count(*) from ranges)
            """, connection);
        command.Parameters.Add(new NpgsqlParameter { Value = (clock.GetUtcNow() - lifetime).UtcDateTime });
        return (int)(long)(await command.ExecuteScalarAsync(cancellationToken))!;
    }
}
