using System.Diagnostics.Metrics;
using System.Net;
using Marten;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using ModularChat.BuildingBlocks.Caching;
using ModularChat.BuildingBlocks.Security;
using ModularChat.Providers.Clients;
using ModularChat.Providers.Contracts;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Secrets;
using ModularChat.Testing.Fakes;
using Npgsql;
using StackExchange.Redis;

namespace ModularChat.Providers.Tests;

[Collection(AppCollection.Name)]
public sealed class SecretsTests(ProvidersApp app)
{
    [Fact]
    public async Task No_plaintext_secret_is_found_in_postgresql_redis_the_logs_or_the_traces()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var apiKey = "sk-live-" + Guid.NewGuid().ToString("N");
        var mcpSecret = "mcp-" + Guid.NewGuid().ToString("N");
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, apiKey);
        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "secured", transport = "streamable-http", url = app.Mcp.SecuredUrl,
            secretHeaders = new Dictionary<string, string> { ["X-Api-Key"] = ProvidersApp.McpApiKey, ["X-Other-Secret"] = mcpSecret },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);

        // Use every secret: a provider test, an MCP test, a chat turn with a tool call, and a provider error that echoes the key.
        await client.PostAsync($"/api/providers/{provider.Id}/test", null);
        Assert.True((await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK)).Success);
        var conversation = await client.StartConversationAsync();
        var marker = "m" + Guid.NewGuid().ToString("N")[..12];
        app.Model.Responder = ChatTests.Answer(marker, request => request.Messages.Any(m => m?["role"]?.ToString() == "tool")
            ? FakeReply.Error(500, $"upstream failed, Authorization: Bearer {apiKey}")
            : FakeReply.Calls(new FakeToolCall("c", "echo", """{"text":"x"}""")), app.Model.Responder);
        await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = marker })).ShouldBeProblem(502);
        Assert.Contains(app.Model.Requests, r => r.Authorization == "Bearer " + apiKey); // the key was really used

        string[] secrets = [apiKey, mcpSecret, ProvidersApp.McpApiKey];
        foreach (var secret in secrets)
        {
            Assert.DoesNotContain(await PostgresRowsContainingAsync(secret), r => true);
            Assert.False(await RedisContainsAsync(secret), "Redis holds a plaintext secret");
            Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(secret, StringComparison.Ordinal));
            Assert.DoesNotContain(app.Traces, t => t.Contains(secret, StringComparison.Ordinal));
        }

        // Nor does the node's cache of the tenant's providers hold it in plain text (before: the decrypted key, for 30 s).
        var cached = CachedProviders(user);
        Assert.Equal(provider.Id, Assert.Single(cached).Id);
        Assert.DoesNotContain(cached.SelectMany(StringFields), value => value.Contains(apiKey, StringComparison.Ordinal));
        Assert.Equal(apiKey, cached[0].ApiKey); // decrypted when asked

        // What is stored is the ciphertext, under a key of the ring.
        await using var session = app.Host.Services.GetRequiredService<IDocumentStore>().QuerySession(user);
        var stored = await session.LoadAsync<ProviderSettings>(provider.Id);
        Assert.NotNull(SecretBox.KeyIdOf(stored!.EncryptedApiKey!));
    }

    /// <summary>The providers this node's <see cref="ProviderDirectory"/> holds for <paramref name="tenant"/>, as cached.</summary>
    private List<ResolvedProvider> CachedProviders(string tenant)
    {
        var directory = app.Host.Services.GetRequiredService<ProviderDirectory>();
        var entries = (System.Collections.IDictionary)typeof(ProviderDirectory)
            .GetField("_entries", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!.GetValue(directory)!;
        var entry = entries[tenant] ?? throw new InvalidOperationException($"Nothing cached for {tenant}");
        return ((IEnumerable<ResolvedProvider>)entry.GetType().GetProperty("Providers")!.GetValue(entry)!).ToList();
    }

    /// <summary>Every string an object holds in its own fields (what a heap dump of the cache would show).</summary>
    private static IEnumerable<string> StringFields(object value)
        => value.GetType().GetFields(System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Public)
            .Where(f => f.FieldType == typeof(string))
            .Select(f => (string?)f.GetValue(value))
            .OfType<string>();

    [Fact]
    public async Task A_summary_job_failing_at_the_tenants_provider_logs_its_error_without_the_key()
    {
        // The Summaries module calls the tenant's provider through ITenantAiClients; a careless provider echoes the key.
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var apiKey = "sk-live-" + Guid.NewGuid().ToString("N");
        await client.AddProviderAsync(app.Model.BaseUrl, apiKey, summaryModel: "fake-summary");
        var conversation = await client.StartConversationAsync();
        var marker = "m" + Guid.NewGuid().ToString("N")[..12];
        app.Model.Responder = ChatTests.Answer(marker, _ => FakeReply.Error(401, $"Incorrect API key provided: {apiKey}."), app.Model.Responder);
        await client.PostJson($"/api/conversations/{conversation}/messages", new { role = "user", content = $"{marker} remember this" });

        Assert.Equal(HttpStatusCode.Accepted, (await client.PostAsync($"/api/conversations/{conversation}/summary", null)).StatusCode);

        var failed = await Eventually.Until(
            () => Task.FromResult(app.Logs.Lines.FirstOrDefault(l => l.Contains($"Summarizing conversation {conversation}", StringComparison.Ordinal))),
            l => l is not null);
        Assert.Contains(app.Model.Requests, r => r.Authorization == "Bearer " + apiKey && r.Body["model"]?.GetValue<string>() == "fake-summary");
        Assert.Contains("401", failed, StringComparison.Ordinal);
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(apiKey, StringComparison.Ordinal));
        Assert.DoesNotContain(await PostgresRowsContainingAsync(apiKey), r => true);
    }

    [Fact]
    public async Task Search_embedding_failing_at_the_tenants_provider_logs_its_error_without_the_key()
    {
        // The Search module embeds a tenant's messages with the tenant's embedding model; a careless provider echoes the key.
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var apiKey = "sk-live-" + Guid.NewGuid().ToString("N");
        var marker = "m" + Guid.NewGuid().ToString("N")[..12];
        app.Model.EmbeddingFailure = request => request.Body["input"]?.ToJsonString().Contains(marker, StringComparison.Ordinal) == true
            ? FakeReply.Error(401, $"Incorrect API key provided: {apiKey}.")
            : null;
        try
        {
            await client.AddProviderAsync(app.Model.BaseUrl, apiKey);
            var conversation = await client.StartConversationAsync();
            await client.PostJson($"/api/conversations/{conversation}/messages", new { role = "user", content = $"{marker} find me later" });

            var failed = await Eventually.Until(
                () => Task.FromResult(app.Logs.Lines.FirstOrDefault(l => l.Contains($"search entries of tenant {user} failed", StringComparison.Ordinal))),
                l => l is not null);
            Assert.Contains(app.Model.Requests, r => r.Authorization == "Bearer " + apiKey && r.Path.EndsWith("embeddings", StringComparison.Ordinal));
            Assert.Contains("401", failed, StringComparison.Ordinal);
            Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(apiKey, StringComparison.Ordinal));
            Assert.DoesNotContain(await PostgresRowsContainingAsync(apiKey), r => true);
        }
        finally
        {
            app.Model.EmbeddingFailure = _ => null;
        }
    }

    [Fact]
    public async Task The_key_ring_in_postgresql_is_encrypted_with_the_master_key()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("select data::text from modularchat.mt_doc_dataprotectionkeydocument", connection);
        var rows = new List<string>();
        await using (var reader = await command.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                rows.Add(reader.GetString(0));
            }
        }

        Assert.NotEmpty(rows);
        Assert.All(rows, r =>
        {
            Assert.Contains("encryptedKey", r, StringComparison.Ordinal);
            Assert.DoesNotContain("requiresEncryption", r, StringComparison.Ordinal); // the unencrypted form of a key's secret
        });
    }

    [Fact]
    public async Task Key_rotation_re_encrypts_every_stored_secret_under_the_newest_key()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, "sk-rotate-me-0123456789");
        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "secured", transport = "streamable-http", url = app.Mcp.SecuredUrl,
            secretHeaders = new Dictionary<string, string> { ["X-Api-Key"] = ProvidersApp.McpApiKey },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);

        await (await client.PostAsync("/api/admin/secrets/rotate", null)).ShouldBeProblem(403);
        // The key is every tenant's: a tenant's administrator may not rotate it, the service's operator may.
        using var tenantAdmin = app.Client(ModularChatApp.NewUser("admin"), roles: "admin");
        var forbidden = await (await tenantAdmin.PostAsync("/api/admin/secrets/rotate", null)).ShouldBeProblem(403);
        Assert.Contains("needs the role 'operator' in the bearer token's 'role' claim", forbidden.GetProperty("detail").GetString(), StringComparison.Ordinal);
        using var operatorClient = app.Client(ModularChatApp.NewUser("operator"), roles: "operator");
        // Hints as stored before they showed at most about a fifth of a secret: the rotation makes them again.
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(user))
        {
            var old = (await session.LoadAsync<ProviderSettings>(provider.Id))!;
            old.ApiKeyHint = "sk-...6789";
            session.Update(old);
            var oldServer = (await session.LoadAsync<McpServerConnection>(server.Id))!;
            foreach (var secret in oldServer.AllSecrets())
            {
                secret.Hint = "mcp...2e1b";
            }

            session.Update(oldServer);
            await session.SaveChangesAsync();
        }

        var rotation = await (await operatorClient.PostAsync("/api/admin/secrets/rotate", null)).ReadAs<RotationDto>(HttpStatusCode.OK);

        Assert.True(rotation.Secrets >= 2);
        Assert.Equal("...6789", (await (await client.GetAsync($"/api/providers/{provider.Id}")).ReadAs<ProviderDto>(HttpStatusCode.OK)).ApiKeyHint);
        Assert.Equal("...2e1b", (await (await client.GetAsync($"/api/mcp-servers/{server.Id}")).ReadAs<McpServerDto>(HttpStatusCode.OK)).SecretHeaders["X-Api-Key"]);
        Assert.Equal(0, rotation.Unreadable);
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().QuerySession(user))
        {
            var storedProvider = await session.LoadAsync<ProviderSettings>(provider.Id);
            var storedServer = await session.LoadAsync<McpServerConnection>(server.Id);
            Assert.Equal(rotation.KeyId, SecretBox.KeyIdOf(storedProvider!.EncryptedApiKey!));
            Assert.All(storedServer!.AllSecrets(), s => Assert.Equal(rotation.KeyId, SecretBox.KeyIdOf(s.Cipher)));
        }

        // The secrets still work, and new ones are encrypted under the new key.
        Assert.True((await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK)).Success);
        Assert.True((await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK)).Success);
        Assert.Contains(app.Model.Requests, r => r.Authorization == "Bearer sk-rotate-me-0123456789");
        var newer = await client.AddProviderAsync(app.Model.BaseUrl, "sk-after-rotation-000", name: "newer");
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().QuerySession(user))
        {
            Assert.Equal(rotation.KeyId, SecretBox.KeyIdOf((await session.LoadAsync<ProviderSettings>(newer.Id))!.EncryptedApiKey!));
        }
    }

    [Fact]
    public async Task A_node_that_has_run_for_a_while_decrypts_the_secrets_another_node_rotated()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var key = $"sk-rotated-elsewhere-{Guid.NewGuid():N}";
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, key);
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Providers:CacheDuration"] = "00:00:00" });
        using var onNode = node.Server.CreateClient();
        onNode.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", app.Token(user));
        Assert.True((await (await onNode.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK)).Success);
        // Data Protection looks for keys it does not know only in a node's first two minutes: this node is past them, as a
        // node that has served for a while (the window is internal to Data Protection; the test fails loudly if it moves).
        var ringProvider = node.Services.GetRequiredService<Microsoft.AspNetCore.DataProtection.KeyManagement.Internal.IKeyRingProvider>();
        var window = ringProvider.GetType().GetProperty("AutoRefreshWindowEnd", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic);
        Assert.NotNull(window);
        window.SetValue(ringProvider, DateTime.UtcNow);

        using var operatorClient = app.Client(ModularChatApp.NewUser("operator"), roles: "operator");
        var rotation = await (await operatorClient.PostAsync("/api/admin/secrets/rotate", null)).ReadAs<RotationDto>(HttpStatusCode.OK);
        Assert.Equal(0, rotation.Unreadable);

        // It answered 409 "cannot be decrypted ... set it again" for every secret rotated, until it restarted.
        var tested = await (await onNode.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
        Assert.True(tested.Success, tested.Error?.Message);
        var key2 = $"sk-after-{Guid.NewGuid():N}";
        var newer = await client.AddProviderAsync(app.Model.BaseUrl, key2, name: "newer");
        Assert.True((await (await onNode.PostAsync($"/api/providers/{newer.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK)).Success);
        Assert.True(app.Model.RequestsWith(key2) > 0);
    }

    [Fact]
    public async Task A_rotation_or_a_node_with_another_master_key_is_refused_before_it_adds_a_key()
    {
        // A database of its own: the refused run must not leave a key the fixture's nodes cannot read in theirs.
        var database = await app.DatabaseOfItsOwnAsync("rotation_master_key");
        var onIt = new Dictionary<string, string> { ["ConnectionStrings__Postgres"] = database };
        var (made, madeOutput) = await app.RunHostCommandAsync(onIt, "rotate-keys");
        Assert.True(made == 0, madeOutput);
        var before = await KeysIn(database);
        Assert.True(before > 0);

        var otherMasterKey = Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
        var (exit, output) = await app.RunHostCommandAsync(
            new Dictionary<string, string>(onIt) { ["DataProtection__MasterKey"] = otherMasterKey }, "rotate-keys");

        // It added a key encrypted with the other master key, which every node configured right then failed to read.
        Assert.True(exit == 1, output);
        Assert.Contains("DataProtection:MasterKey is not the one", output, StringComparison.Ordinal);
        Assert.DoesNotContain(otherMasterKey, output, StringComparison.Ordinal);
        Assert.Equal(before, await KeysIn(database));

        // A node started with it does not start: it served every stored secret as 409 and made a key of its own at the
        // first secret it protected or decrypted, which the nodes configured right could not read.
        var startError = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Postgres"] = database, ["DataProtection:MasterKey"] = otherMasterKey,
        }));
        Assert.Contains(Exceptions.Flatten(startError), e => e is InvalidOperationException
            && e.Message.Contains("DataProtection:MasterKey is not the one", StringComparison.Ordinal));
        Assert.DoesNotContain(otherMasterKey, startError.ToString(), StringComparison.Ordinal);
        Assert.Equal(before, await KeysIn(database));

        static async Task<long> KeysIn(string connectionString)
        {
            await using var connection = new NpgsqlConnection(connectionString);
            await connection.OpenAsync();
            await using var count = new NpgsqlCommand("select count(*) from mt_doc_dataprotectionkeydocument", connection);
            return (long)(await count.ExecuteScalarAsync())!;
        }
    }

    [Fact]
    public async Task A_key_changed_while_a_rotation_rewrites_it_is_kept_and_ends_up_under_the_new_key()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, "sk-before-the-rotation-0123");
        // On a node of its own, the owner replaces the key just before the rotation writes the provider it read earlier.
        var change = new ChangeBeforeTheRotationWrites(provider.Id);
        await using var node = await app.StartHostAsync(services: s => s.ConfigureMarten(o => o.Listeners.Add(change)));
        using var owner = app.Client(node, user);
        change.Change = async () => await (await owner.PutJson($"/api/providers/{provider.Id}", new
        {
            name = provider.Name, kind = provider.Kind, endpoint = provider.Endpoint, chatModel = provider.ChatModel,
            embeddingModel = provider.EmbeddingModel, apiKey = "sk-changed-during-rotation-4567",
        })).ReadAs<ProviderDto>(HttpStatusCode.OK);
        using var operatorClient = app.Client(node, ModularChatApp.NewUser("operator"), null, "operator");

        var rotation = await (await operatorClient.PostAsync("/api/admin/secrets/rotate", null)).ReadAs<RotationDto>(HttpStatusCode.OK);

        // The rotation's first write met the changed provider, read it again and rewrote the new key, not the old one.
        Assert.True(change.Changed);
        Assert.Equal(2, change.RotationWrites);
        Assert.Equal(0, rotation.Unreadable);
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().QuerySession(user))
        {
            Assert.Equal(rotation.KeyId, SecretBox.KeyIdOf((await session.LoadAsync<ProviderSettings>(provider.Id))!.EncryptedApiKey!));
        }

        Assert.True((await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK)).Success);
        Assert.Contains(app.Model.Requests, r => r.Authorization == "Bearer sk-changed-during-rotation-4567");
    }

    /// <summary>Runs <see cref="Change"/> once, when a session (the rotation's) is about to write the provider.</summary>
    private sealed class ChangeBeforeTheRotationWrites(Guid providerId) : DocumentSessionListenerBase
    {
        private int _changed;
        private int _rotationWrites;

        public Func<Task> Change { get; set; } = () => Task.CompletedTask;

        public bool Changed => Volatile.Read(ref _changed) == 1;

        /// <summary>Writes of the provider other than the change's own (the rotation's).</summary>
        public int RotationWrites => Volatile.Read(ref _rotationWrites);

        private volatile bool _changing;

        public override async Task BeforeSaveChangesAsync(IDocumentSession session, CancellationToken token)
        {
            if (_changing || !session.PendingChanges.UpdatesFor<ProviderSettings>().Any(p => p.Id == providerId))
            {
                return; // the change's own write, or another document
            }

            Interlocked.Increment(ref _rotationWrites);
            if (Interlocked.Exchange(ref _changed, 1) == 0)
            {
                _changing = true;
                try
                {
                    await Change();
                }
                finally
                {
                    _changing = false;
                }
            }
        }
    }

    [Fact]
    public async Task Key_rotations_requested_at_once_run_one_at_a_time_and_a_refused_one_adds_no_key()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, "sk-rotated-at-once-0123456789");
        using var operatorClient = app.Client(ModularChatApp.NewUser("operator"), roles: "operator");
        var keysBefore = await KeyCountAsync();

        var responses = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => operatorClient.PostAsync("/api/admin/secrets/rotate", null)));

        // Each one rotated or was refused at once, never a 500 (it was, after waiting 30 s for a key that another one outdated).
        var statuses = responses.Select(r => (int)r.StatusCode).ToList();
        Assert.True(statuses.All(s => s is 200 or 409), string.Join(", ", statuses));
        var rotations = new List<RotationDto>();
        foreach (var response in responses)
        {
            if (response.StatusCode == HttpStatusCode.OK)
            {
                rotations.Add(await response.ReadAs<RotationDto>(HttpStatusCode.OK));
            }
            else
            {
                var refused = await response.ShouldBeProblem(409);
                Assert.Contains("rotation is already in progress", refused.GetProperty("detail").GetString(), StringComparison.Ordinal);
            }
        }

        Assert.NotEmpty(rotations);
        Assert.Equal(keysBefore + rotations.Count, await KeyCountAsync()); // a refused request adds no key
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().QuerySession(user))
        {
            var stored = await session.LoadAsync<ProviderSettings>(provider.Id);
            Assert.Contains(SecretBox.KeyIdOf(stored!.EncryptedApiKey!), rotations.Select(r => (Guid?)r.KeyId));
        }

        Assert.True((await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK)).Success);

        // A rotation running on another node (its lock held here) refuses the request at once, and no key is added.
        await using var otherNode = new NpgsqlConnection(app.PostgresConnectionString);
        await otherNode.OpenAsync();
        await using (var take = new NpgsqlCommand($"select pg_advisory_lock({RotationLockKey})", otherNode))
        {
            await take.ExecuteScalarAsync();
        }

        var keys = await KeyCountAsync();
        var busy = await (await operatorClient.PostAsync("/api/admin/secrets/rotate", null)).ShouldBeProblem(409);
        Assert.Contains("rotation is already in progress", busy.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(keys, await KeyCountAsync());

        await using (var release = new NpgsqlCommand($"select pg_advisory_unlock({RotationLockKey})", otherNode))
        {
            await release.ExecuteScalarAsync();
        }

        await (await operatorClient.PostAsync("/api/admin/secrets/rotate", null)).ReadAs<RotationDto>(HttpStatusCode.OK);
        Assert.Equal(keys + 1, await KeyCountAsync());
    }

    [Fact]
    public async Task The_service_refuses_to_start_without_a_master_key_outside_development()
    {
        var error = await Record.ExceptionAsync(() => app.StartHostAsync(new Dictionary<string, string?> { ["DataProtection:MasterKey"] = "" }));

        Assert.NotNull(error);
        Assert.Contains("DataProtection:MasterKey", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_master_key_in_the_wrong_format_stops_the_start_without_being_printed()
    {
        // 32 random bytes as hex (openssl rand -hex 32), a common slip: valid base64 too, but of 48 bytes, so refused.
        var hexKey = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
        var previous = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));
        var error = await Record.ExceptionAsync(() => app.StartHostAsync(new Dictionary<string, string?>
        {
            ["DataProtection:MasterKey"] = hexKey,
            ["DataProtection:PreviousMasterKeys:0"] = previous,
        }));

        Assert.NotNull(error);
        Assert.Contains("DataProtection:MasterKey", error.ToString(), StringComparison.Ordinal);
        Assert.Contains("DataProtection:PreviousMasterKeys:0", error.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(hexKey, error.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(previous, error.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(hexKey, StringComparison.Ordinal) || l.Contains(previous, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("Development", "", true)]
    [InlineData("Testing", "", false)]
    [InlineData("Production", "", false)]
    [InlineData("Production", "c2VjcmV0LW1hc3Rlci1rZXktb2YtMzItYnl0ZXMtISE=", true)]
    [InlineData("Production", PublishedKeys.ComposeMasterKey, false)] // docker-compose.yml's, which anyone can read
    [InlineData("Development", PublishedKeys.ComposeMasterKey, true)]
    public void A_master_key_is_required_outside_development(string environment, string masterKey, bool starts)
    {
        var rule = new MasterKeyRequired(new TestEnvironment { EnvironmentName = environment });
        var result = rule.Validate(null, new DataProtectionSettings { MasterKey = masterKey });
        Assert.Equal(starts, result.Succeeded);
    }

    [Fact]
    public async Task Cached_provider_settings_with_their_keys_leave_memory_when_the_cache_duration_ends()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var tenant = ModularChatApp.NewUser();
        using var tenantClient = app.Client(tenant);
        await tenantClient.AddProviderAsync(app.Model.BaseUrl, "sk-short-lived-0123456789");
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var options = new TestOptionsMonitor<ProvidersOptions>(new ProvidersOptions { CacheDuration = TimeSpan.FromSeconds(30), LocalOnlyCacheDuration = TimeSpan.FromSeconds(30) });
        using var directory = new ProviderDirectory(app.Host.Services.GetRequiredService<IDocumentStore>(),
            app.Host.Services.GetRequiredService<SecretBox>(), app.Host.Services.GetRequiredService<CacheGenerations>(), options, clock);

        var provider = await directory.FindAsync(tenant, null, CancellationToken.None);
        Assert.Equal("sk-short-lived-0123456789", provider!.ApiKey);
        Assert.Equal(1, directory.CachedTenants);

        clock.Advance(TimeSpan.FromSeconds(20));
        Assert.Equal(1, directory.CachedTenants);
        clock.Advance(TimeSpan.FromSeconds(20)); // the sweeper runs on the clock, without anybody asking
        Assert.Equal(0, directory.CachedTenants);
        Assert.DoesNotContain("sk-short", provider.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Other_modules_get_the_tenants_clients_through_the_contract()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var clients = app.Host.Services.GetRequiredService<ITenantAiClients>();
        Assert.Null(await clients.GetChatClientAsync(tenant, AiPurpose.Chat));
        Assert.Null(await clients.GetEmbeddingGeneratorAsync(tenant));

        await client.AddProviderAsync(app.Model.BaseUrl, summaryModel: "fake-summary");
        var summary = await clients.GetChatClientAsync(tenant, AiPurpose.Summary);
        var chat = await clients.GetChatClientAsync(tenant, AiPurpose.Chat);
        Assert.Equal(("fake", "fake-summary"), (summary!.ProviderName, summary.Model));
        Assert.Equal("fake-model", chat!.Model);

        var answer = await summary.Client.GetResponseAsync("summarize: hello");
        Assert.Contains("hello", answer.Text, StringComparison.Ordinal);
        var embeddings = await (await clients.GetEmbeddingGeneratorAsync(tenant))!.Generator.GenerateAsync(["a", "b"]);
        Assert.Equal(2, embeddings.Count);
    }

    [Fact]
    public async Task Model_calls_and_tool_calls_are_measured()
    {
        var meters = app.Host.Services.GetRequiredService<IMeterFactory>();
        using var tokens = new MetricCollector<long>(meters, "ModularChat", "modularchat.llm.tokens");
        using var duration = new MetricCollector<double>(meters, "ModularChat", "modularchat.llm.call.duration");
        using var toolCalls = new MetricCollector<long>(meters, "ModularChat", "modularchat.mcp.tool_calls");
        using var mcpTests = new MetricCollector<long>(meters, "ModularChat", "modularchat.mcp.tests");
        using var client = app.Client(ModularChatApp.NewUser());
        var model = $"fake-model-{Guid.NewGuid():N}"; // a model of this test's own: the measurements of other tenants' calls are not counted
        await client.AddProviderAsync(app.Model.BaseUrl, chatModel: model);
        // A server name of its own too: spans are the process's, other collections' tests call the calculator's add as well.
        var serverName = $"calc-{Guid.NewGuid():N}"[..13];
        var server = await (await client.PostJson("/api/mcp-servers", new { name = serverName, transport = "streamable-http", url = app.Mcp.StreamableHttpUrl }))
            .ReadAs<McpServerDto>(HttpStatusCode.Created);
        await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null);
        var conversation = await client.StartConversationAsync();
        var marker = "m" + Guid.NewGuid().ToString("N")[..12];
        var responder = app.Model.Responder;
        using var restore = new Restore(() => app.Model.Responder = responder);
        app.Model.Responder = ChatTests.Answer(marker, request => request.Messages.Any(m => m?["role"]?.ToString() == "tool")
            ? new FakeReply("five", PromptTokens: 30, CompletionTokens: 3)
            : new FakeReply(ToolCalls: [new FakeToolCall("c", "add", """{"a":2,"b":3}""")], PromptTokens: 20, CompletionTokens: 5), app.Model.Responder);

        await client.ChatAsync(conversation, marker);

        var provider = $"openai-compatible:{app.Model.BaseUrl.Authority}";
        var measured = tokens.GetMeasurementSnapshot().Where(m => (string?)m.Tags["provider"] == provider && (string?)m.Tags["model"] == model).ToList();
        Assert.Equal(20 + 30, measured.Where(m => (string?)m.Tags["direction"] == "input").Sum(m => m.Value)); // both rounds of the turn
        Assert.Equal(5 + 3, measured.Where(m => (string?)m.Tags["direction"] == "output").Sum(m => m.Value));
        Assert.Contains(duration.GetMeasurementSnapshot(), m => (string?)m.Tags["provider"] == provider && (string?)m.Tags["outcome"] == "ok");
        Assert.Contains(toolCalls.GetMeasurementSnapshot(), m => (string?)m.Tags["server"] == serverName && (string?)m.Tags["tool"] == "add" && (string?)m.Tags["outcome"] == "ok");
        Assert.Contains(mcpTests.GetMeasurementSnapshot(), m => (string?)m.Tags["transport"] == "streamable-http" && (string?)m.Tags["outcome"] == "ok");
        Assert.Contains(app.Traces, t => t.StartsWith("ModularChat | chat turn", StringComparison.Ordinal) && t.Contains($"gen_ai.request.model={model}", StringComparison.Ordinal));
        Assert.Contains(app.Traces, t => t.StartsWith("ModularChat | mcp tool call", StringComparison.Ordinal) && t.Contains($"mcp.server={serverName}", StringComparison.Ordinal)
            && t.Contains("mcp.tool=add", StringComparison.Ordinal));
    }

    /// <summary>The advisory lock of key rotations (SecretRotation.LockKey, "KEYROTAT"), spelled out as another node would.</summary>
    private const long RotationLockKey = 0x4B4559524F544154;

    /// <summary>Keys in the data-protection key ring.</summary>
    private async Task<long> KeyCountAsync()
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("select count(*) from modularchat.mt_doc_dataprotectionkeydocument", connection);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private async Task<List<string>> PostgresRowsContainingAsync(string text)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        var tables = new List<string>();
        await using (var list = new NpgsqlCommand(
            "select quote_ident(table_schema) || '.' || quote_ident(table_name) from information_schema.tables " +
            "where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')", connection))
        await using (var reader = await list.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                tables.Add(reader.GetString(0));
            }
        }

        var found = new List<string>();
        foreach (var table in tables)
        {
            await using var search = new NpgsqlCommand($"select count(*) from {table} t where t::text like '%' || @text || '%'", connection);
            search.Parameters.AddWithValue("text", text);
            if ((long)(await search.ExecuteScalarAsync())! > 0)
            {
                found.Add(table);
            }
        }

        Assert.True(tables.Count > 5, "the scan must see the database's tables");
        return found;
    }

    private async Task<bool> RedisContainsAsync(string text)
    {
        await using var redis = await ConnectionMultiplexer.ConnectAsync(app.RedisConnectionString);
        var server = redis.GetServers().First();
        var db = redis.GetDatabase();
        foreach (var key in server.Keys(pattern: "*", pageSize: 1000))
        {
            if (key.ToString().Contains(text, StringComparison.Ordinal))
            {
                return true;
            }

            var type = await db.KeyTypeAsync(key);
            string dump = type switch
            {
                RedisType.String => (string?)await db.StringGetAsync(key) ?? "",
                RedisType.Hash => string.Join(" ", (await db.HashGetAllAsync(key)).Select(e => $"{e.Name}={e.Value}")),
                RedisType.List => string.Join(" ", await db.ListRangeAsync(key)),
                RedisType.Set => string.Join(" ", await db.SetMembersAsync(key)),
                RedisType.SortedSet => string.Join(" ", await db.SortedSetRangeByRankAsync(key)),
                _ => "",
            };
            if (dump.Contains(text, StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    private sealed record RotationDto(Guid KeyId, int Providers, int McpServers, int Secrets, int Unreadable);

    private sealed class Restore(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }

    private sealed class TestEnvironment : IHostEnvironment
    {
        public string EnvironmentName { get; set; } = "Production";

        public string ApplicationName { get; set; } = "tests";

        public string ContentRootPath { get; set; } = AppContext.BaseDirectory;

        public Microsoft.Extensions.FileProviders.IFileProvider ContentRootFileProvider { get; set; } = new Microsoft.Extensions.FileProviders.NullFileProvider();
    }

    private sealed class TestOptionsMonitor<T>(T value) : IOptionsMonitor<T>
    {
        public T CurrentValue => value;

        public T Get(string? name) => value;

        public IDisposable? OnChange(Action<T, string?> listener) => null;
    }
}

public sealed class SecretHintTests
{
    [Theory]
    [InlineData("sk-proj-abcdefghijklmnop0123wxyz", "sk-...wxyz")] // 32 characters: an API key's prefix tells keys apart
    [InlineData("0123456789abcdefghijklmnopqrstu", "...rstu")] // 31
    [InlineData("vault-token-0123456789", "...6789")] // 22
    [InlineData("0123456789abcdefghi", "...hi")] // 19
    [InlineData("  0123456789  ", "...89")] // 10, around blanks
    [InlineData("012345678", "***")] // 9
    [InlineData("", "***")]
    public void A_hint_shows_at_most_about_a_fifth_of_the_secret(string secret, string hint)
        => Assert.Equal(hint, SecretBox.Hint(secret)); // a 16-character token showed 7 of its characters before ("tok...3456")
}
