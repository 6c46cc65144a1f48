using System.Net;
using System.Net.Http.Headers;
using Alba;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Options;
using ModularChat.Testing.Fakes;
using Npgsql;

namespace ModularChat.Providers.Tests;

/// <summary>
/// A first deployment of two replicas: both nodes start at the same time on a new, empty database, where each applies
/// Marten's schema, creates Wolverine's tables and finds no data-protection key.
/// </summary>
[Collection(ChatCollection.Name)]
public sealed class FirstStartTests(ProvidersChatApp app)
{
    /// <summary>A race may not show on the first try: a fresh database each round.</summary>
    private const int Rounds = 3;

    [Fact]
    public async Task Two_nodes_started_at_once_on_an_empty_database_both_start_and_serve_as_one_deployment()
    {
        for (var round = 1; round <= Rounds; round++)
        {
            await OnAnEmptyDatabaseAsync(async connectionString =>
            {
                var logsA = new CapturedLogs();
                var logsB = new CapturedLogs();
                var starts = new[] { Start(logsA), Start(logsB) };
                try
                {
                    await Task.WhenAll(starts);
                }
                catch
                {
                    foreach (var started in starts.Where(s => s.IsCompletedSuccessfully))
                    {
                        await started.Result.DisposeAsync();
                    }

                    throw;
                }

                await using var nodeA = starts[0].Result;
                await using var nodeB = starts[1].Result;
                await ServeAsOneDeploymentAsync(nodeA.Server.CreateClient(), nodeB.Server.CreateClient(), $"round {round}");

                // Neither node logged an error: a lost race it recovered from quietly is fine, one it logged is not (nor a
                // start that StartHostAsync tried again after a deadlock: the failed attempt logged it).
                foreach (var (logs, node) in new[] { (logsA, "A"), (logsB, "B") })
                {
                    Assert.Empty(logs.Entries.Where(e => e.Level is >= LogLevel.Error and < LogLevel.None).Select(e => $"round {round}, node {node}: {e}"));
                }

                Task<IAlbaHost> Start(CapturedLogs logs)
                    // Its own thread: a host starts synchronously up to its first wait, so two calls in a row would not overlap.
                    => Task.Run(() => app.StartHostAsync(
                        new Dictionary<string, string?> { ["ConnectionStrings:Postgres"] = connectionString },
                        services => services.AddSingleton<ILoggerProvider>(logs)));
            });
        }
    }

    /// <summary>
    /// The same with two processes, as an operator starts them: the start checks before the host starts (HostStart), and
    /// Wolverine's nodes electing a leader (the in-memory hosts run in solo mode).
    /// </summary>
    [Fact]
    public async Task Two_node_processes_started_at_once_on_an_empty_database_both_start_and_serve_as_one_deployment()
        => await OnAnEmptyDatabaseAsync(async connectionString =>
        {
            // The fake model is on loopback.
            var environment = new Dictionary<string, string> { ["OutboundNetwork__AllowPrivateNetworks"] = "true" };
            var starts = new[]
            {
                app.StartHostProcessAsync(environment, database: connectionString),
                app.StartHostProcessAsync(environment, database: connectionString),
            };
            try
            {
                await Task.WhenAll(starts);
                await ServeAsOneDeploymentAsync(starts[0].Result.Client(), starts[1].Result.Client(), "processes");
                foreach (var node in starts.Select(s => s.Result))
                {
                    // The simple console format's error and critical entries ("fail:", "crit:").
                    Assert.DoesNotContain("fail: ", node.Output, StringComparison.Ordinal);
                    Assert.DoesNotContain("crit: ", node.Output, StringComparison.Ordinal);
                }
            }
            finally
            {
                foreach (var started in starts.Where(s => s.IsCompletedSuccessfully))
                {
                    await started.Result.DisposeAsync();
                }
            }
        });

    /// <summary>
    /// Another session holds the schema lock, as a node applying a slow migration does: a starting node waits for it up to
    /// Messaging:SchemaLockTimeout, then is refused in one line naming the setting; one that waits long enough starts when
    /// the lock is let go.
    /// </summary>
    [Fact]
    public async Task A_node_waits_for_the_schema_lock_up_to_Messaging_SchemaLockTimeout_then_is_refused_naming_it()
        => await OnAnEmptyDatabaseAsync(async connectionString =>
        {
            var lockId = app.Host.Services.GetRequiredService<StoreOptions>().ApplyChangesLockId;
            await using var holder = new NpgsqlConnection(connectionString);
            await holder.OpenAsync();
            await using (var take = new NpgsqlCommand($"select pg_advisory_lock({lockId}::bigint)", holder))
            {
                await take.ExecuteNonQueryAsync();
            }

            var failed = await Assert.ThrowsAnyAsync<Exception>(() => StartAsync("00:00:02"));
            var reason = Assert.Single(StartRefusedException.Reasons(failed) ?? [$"not a start refusal: {failed}"]);
            Assert.Contains("Messaging:SchemaLockTimeout (00:00:02)", reason, StringComparison.Ordinal);
            Assert.Contains($"advisory lock {lockId}", reason, StringComparison.Ordinal);

            var patient = Task.Run(() => StartAsync("00:02:00"));
            await Task.Delay(TimeSpan.FromSeconds(3));
            Assert.False(patient.IsCompleted, "a node started (or failed) while another session held the schema lock");
            await using (var release = new NpgsqlCommand($"select pg_advisory_unlock({lockId}::bigint)", holder))
            {
                await release.ExecuteNonQueryAsync();
            }

            await using var node = await patient;
            using var client = node.Server.CreateClient();
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health/ready")).StatusCode);

            Task<IAlbaHost> StartAsync(string timeout) => app.StartHostAsync(new Dictionary<string, string?>
            {
                ["ConnectionStrings:Postgres"] = connectionString,
                ["Messaging:SchemaLockTimeout"] = timeout,
            });
        });

    /// <summary>Runs <paramref name="test"/> on a new database of its own, dropped after it.</summary>
    private async Task OnAnEmptyDatabaseAsync(Func<string, Task> test)
    {
        var database = ModularChatApp.TestDatabase($"firststart_{Guid.NewGuid():N}");
        try
        {
            await test(await TestInfrastructure.PostgresAsync(database));
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            var admin = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString) { Database = "postgres", Pooling = false };
            await using var connection = new NpgsqlConnection(admin.ConnectionString);
            await connection.OpenAsync();
            await using var drop = new NpgsqlCommand($"drop database if exists \"{database}\" with (force)", connection);
            await drop.ExecuteNonQueryAsync();
        }
    }

    /// <summary>
    /// Both nodes ready; a conversation written through one read through the other; a secret stored through either decrypted
    /// by the other (one key ring, however many first keys were made); a summary job done with it.
    /// </summary>
    /// <param name="clientA">A client of node A without credentials (it gets a new tenant's), disposed here.</param>
    private async Task ServeAsOneDeploymentAsync(HttpClient clientA, HttpClient clientB, string what)
    {
        using var nodeA = clientA;
        using var nodeB = clientB;
        var user = ModularChatApp.NewUser("firststart");
        foreach (var (client, node) in new[] { (nodeA, "A"), (nodeB, "B") })
        {
            Assert.True((await client.GetAsync("/health/ready")).StatusCode == HttpStatusCode.OK, $"{what}: node {node} is not ready");
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));
        }

        // A conversation written through one node is read through the other.
        var conversation = await nodeA.StartConversationAsync();
        var messages = $"/api/conversations/{conversation}/messages";
        await (await nodeA.PostJson(messages, new { role = "user", content = "written through node A", externalId = "m1" })).ReadAs<IdDto>(HttpStatusCode.Created);
        var page = await (await nodeB.GetAsync(messages)).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal(["written through node A"], page.Items.Select(m => m.Content));

        // A secret stored through either node is decrypted by the other.
        foreach (var (storing, testing, name) in new[] { (nodeA, nodeB, "through-a"), (nodeB, nodeA, "through-b") })
        {
            var key = $"sk-firststart-{name}-{Guid.NewGuid():N}";
            var provider = await storing.AddProviderAsync(app.Model.BaseUrl, key, name: name, isDefault: true);
            using var _ = app.Model.AnswerFor(key, FakeReply.Text("OK"));
            var result = await (await testing.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
            Assert.True(result.Success, $"{what}, stored {name}: {result.Error?.Message}");
            // The key reached the model (once, or more where the client retried: under load a CI run saw 2).
            Assert.NotEqual(0, app.Model.RequestsWith(key));
        }

        // A summary job runs (on either node, with the tenant's default provider, whose key node B stored).
        (await nodeA.PostJson($"{messages}/batch", new
        {
            messages = Enumerable.Range(2, 11).Select(i => new { role = i % 2 == 1 ? "user" : "assistant", content = $"message {i} of the {what}" }),
        })).EnsureSuccessStatusCode();
        Assert.Equal(HttpStatusCode.OK, await nodeB.WaitForSummary(conversation));
    }
}
