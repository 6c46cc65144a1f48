using JasperFx.CommandLine;
using Marten;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Npgsql;
using Wolverine;

namespace ModularChat.Conversations.Features.Retention;

public sealed class RetentionInput : NetCoreInput
{
    [Description("Only this tenant's conversations")]
    public string? TenantFlag { get; set; }
}

/// <summary>
/// <c>retention [--tenant t]</c>: applies the retention policies to every conversation with more hot messages than its
/// policy keeps, one conversation at a time through the same durable handler the service uses (its transaction, its
/// outbox), and prints what it did. Safe to run next to the service: each conversation is locked while it is changed.
/// </summary>
[Description("Apply the retention policies to every conversation (or one tenant's) now, as a batch", Name = "retention")]
public sealed class RetentionCommand : JasperFxAsyncCommand<RetentionInput>
{
    public override async Task<bool> Execute(RetentionInput input)
    {
        using var host = input.BuildHost();
        if (host is WebApplication web)
        {
            // The handlers run in this process, but it must not take the service's HTTP port.
            web.Urls.Clear();
            web.Urls.Add("http://127.0.0.1:0");
        }

        await host.StartAsync();
        try
        {
            var options = host.Services.GetRequiredService<IOptionsMonitor<RetentionOptions>>().CurrentValue;
            var store = host.Services.GetRequiredService<IDocumentStore>();
            using var scope = host.Services.CreateScope(); // the bus is scoped (resolving it from the root fails where scopes are validated)
            var bus = scope.ServiceProvider.GetRequiredService<IMessageBus>();
            var candidates = await CandidatesAsync(store, input.TenantFlag);

            int examined = 0, applied = 0, unchanged = 0, failed = 0;
            foreach (var (tenant, id, messages, retainedThrough) in candidates)
            {
                var policy = options.For(tenant);
                if (policy.Action is null || messages - retainedThrough <= policy.KeepLast)
                {
                    continue;
                }

                examined++;
                try
                {
                    await bus.InvokeForTenantAsync(tenant, new ApplyRetention(id));
                    await using var session = store.QuerySession(tenant);
                    var after = await session.LoadAsync<Domain.Conversation>(id);
                    if (after is not null && after.RetainedThrough > retainedThrough)
                    {
                        applied++;
                    }
                    else
                    {
                        unchanged++;
                    }
                }
                catch (Exception e)
                {
                    failed++;
                    Console.Error.WriteLine($"{tenant}/{id}: {e.GetType().Name}: {e.Message}");
                }

                if (examined % 100 == 0)
                {
                    Console.WriteLine($"{examined} conversations examined, {applied} changed, {unchanged} unchanged, {failed} failed");
                }
            }

            Console.WriteLine($"retention: {examined} conversations over their policy's limit, {applied} changed, {unchanged} unchanged " +
                              $"(no summary covers their older messages yet, or the step waits for search indexing to read them: the service " +
                              $"applies it then), {failed} failed");
            return failed == 0;
        }
        finally
        {
            await host.StopAsync();
        }
    }

    /// <summary>Every conversation (of one tenant, or all) with its message count and how far retention has gone.</summary>
    private static async Task<List<(string Tenant, Guid Id, long Messages, long RetainedThrough)>> CandidatesAsync(IDocumentStore store, string? tenant)
    {
        var table = store.Options.Schema.For<Domain.Conversation>();
        await using var connection = store.Storage.Database.CreateConnection();
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            $"""
            select tenant_id, id, coalesce((data->>'MessageCount')::bigint, 0), coalesce((data->>'RetainedThrough')::bigint, 0)
            from {table} where $1::varchar is null or tenant_id = $1 order by tenant_id, id
            """, connection);
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)tenant ?? DBNull.Value, DataTypeName = "varchar" });
        var rows = new List<(string, Guid, long, long)>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows.Add((reader.GetString(0), reader.GetGuid(1), reader.GetInt64(2), reader.GetInt64(3)));
        }

        return rows;
    }
}
