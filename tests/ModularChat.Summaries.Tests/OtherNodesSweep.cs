using ModularChat.Summaries.Features.Sweep;
using Npgsql;

namespace ModularChat.Summaries.Tests;

/// <summary>
/// Another node's sweep: a session of its own holding the sweep lock (<see cref="SummarySweep.LockKey"/>). It unlocks
/// explicitly (<see cref="EndAsync"/>, or when disposed): closing the connection would release the lock too, but only once
/// the server has ended that session, which can come after the next attempt.
/// </summary>
internal sealed class OtherNodesSweep : IAsyncDisposable
{
    private readonly NpgsqlConnection _session;
    private bool _ended;

    private OtherNodesSweep(NpgsqlConnection session) => _session = session;

    public static async Task<OtherNodesSweep> StartAsync(string connectionString)
    {
        var session = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);
        await session.OpenAsync();
        await using var take = new NpgsqlCommand($"select pg_advisory_lock({SummarySweep.LockKey})", session);
        await take.ExecuteScalarAsync();
        return new OtherNodesSweep(session);
    }

    /// <summary>Ends the sweep: releases the lock it held.</summary>
    public async Task EndAsync()
    {
        await using var release = new NpgsqlCommand($"select pg_advisory_unlock({SummarySweep.LockKey})", _session);
        Assert.Equal(true, await release.ExecuteScalarAsync());
        _ended = true;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_ended)
        {
            await EndAsync();
        }

        await _session.DisposeAsync();
    }
}
