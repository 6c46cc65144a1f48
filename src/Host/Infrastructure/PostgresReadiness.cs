using Microsoft.Extensions.Diagnostics.HealthChecks;
using ModularChat.BuildingBlocks.Persistence;
using Npgsql;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// The <c>postgresql</c> check of <c>/health/ready</c>: <c>select 1</c> answered within <see cref="Limit"/>, on a small pool
/// of its own (a node whose requests hold every connection of the store's pool is busy, not unready). Asked through a
/// <see cref="DatabaseProbe"/>, so the answer comes within the limit also from a server that takes connections but does not
/// answer; the health check package's check waited there for Npgsql's cancel request, a minute.
/// </summary>
internal sealed class PostgresReadiness : IHealthCheck, IAsyncDisposable
{
    /// <summary>How long PostgreSQL has to answer before the node reports itself unready.</summary>
    public static readonly TimeSpan Limit = TimeSpan.FromSeconds(3);

    private readonly NpgsqlDataSource _dataSource;
    private readonly DatabaseProbe _probe;
    private readonly DatabaseOutageLog _outages;

    public PostgresReadiness(IConfiguration configuration, DatabaseOutageLog outages, TimeProvider clock)
    {
        _outages = outages;
        // A few connections: one held by a question Npgsql is still cancelling must not keep the next check from its own.
        var connection = new NpgsqlConnectionStringBuilder(configuration.PostgresConnectionString()) { MaxPoolSize = 4 };
        _dataSource = NpgsqlDataSource.Create(connection);
        _probe = new DatabaseProbe(OpenAsync, clock);
    }

    /// <summary>
    /// Healthy when PostgreSQL answered in time; otherwise unhealthy, and the node's outage check is told, so that it asks too
    /// (a load balancer's readiness probes find a stalled server within seconds, long before a statement's timeout does).
    /// </summary>
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (await _probe.FailureAsync(Limit, cancellationToken) is not { } failure)
        {
            return HealthCheckResult.Healthy();
        }

        _outages.Suspect(failure);
        return new HealthCheckResult(context.Registration.FailureStatus, exception: failure);
    }

    public ValueTask DisposeAsync() => _dataSource.DisposeAsync();

    private async Task<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken)
        => await _dataSource.OpenConnectionAsync(cancellationToken);
}
