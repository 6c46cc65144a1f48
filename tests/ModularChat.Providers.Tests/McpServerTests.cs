using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Mcp;
using Npgsql;

namespace ModularChat.Providers.Tests;

[Collection(McpCollection.Name)]
public sealed class McpServerTests(ProvidersMcpApp app)
{
    [Fact]
    public async Task Testing_a_streamable_http_server_reports_protocol_server_tools_and_latency_and_caches_the_tools()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await (await client.PostJson("/api/mcp-servers", new { name = "http", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl }))
            .ReadAs<McpServerDto>(HttpStatusCode.Created);
        Assert.Null(server.Tools);

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.True(result.Success, result.Error);
        Assert.False(string.IsNullOrEmpty(result.ProtocolVersion));
        Assert.Equal("modularchat-test-http", result.Server!.Name);
        Assert.Equal("2.0.0", result.Server.Version);
        Assert.True(result.LatencyMs > 0);
        var add = Assert.Single(result.Tools, t => t.Name == "add");
        Assert.Contains("sum", add.Description, StringComparison.Ordinal);
        Assert.True(add.InputSchema.GetProperty("properties").TryGetProperty("a", out _));
        // The server's "fail" tool describes itself with a NUL character: stored (and answered) without it.
        Assert.Equal("Always fails.", Assert.Single(result.Tools, t => t.Name == "fail").Description);

        var cached = await (await client.GetAsync($"/api/mcp-servers/{server.Id}")).ReadAs<McpServerDto>(HttpStatusCode.OK);
        Assert.Equal(result.Tools.Select(t => t.Name).Order(), cached.Tools!.Select(t => t.Name).Order());
        Assert.NotNull(cached.ToolsRefreshedAt);
        Assert.Equal("modularchat-test-http", cached.ServerName);
    }

    [Fact]
    public async Task Testing_an_sse_server_performs_the_handshake_over_the_legacy_transport()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await (await client.PostJson("/api/mcp-servers", new { name = "sse", transport = "sse", url = app.Mcp.SseUrl }))
            .ReadAs<McpServerDto>(HttpStatusCode.Created);

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.True(result.Success, result.Error);
        Assert.Equal("sse", result.Transport);
        Assert.Equal("modularchat-test-http", result.Server!.Name);
        Assert.Contains(result.Tools, t => t.Name == "echo");
    }

    [Fact]
    public async Task Testing_a_stdio_server_runs_the_allowlisted_program_and_lists_its_tools()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "stdio", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll },
            environment = new Dictionary<string, string> { ["GREETING"] = "hello", ["SERVICE_TOKEN"] = "tok-secret-123456" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        Assert.Equal("hello", server.Environment["GREETING"]);
        Assert.False(server.Environment.ContainsKey("SERVICE_TOKEN")); // a name that looks secret is stored encrypted
        Assert.Equal("...56", server.SecretEnvironment["SERVICE_TOKEN"]);

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.True(result.Success, result.Error);
        Assert.Equal("modularchat-test-stdio", result.Server!.Name);
        Assert.Contains(result.Tools, t => t.Name == "get_env");
    }

    [Fact]
    public async Task Secret_headers_are_sent_to_the_server_and_shown_only_as_hints()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "secured", transport = "streamable-http", url = app.Mcp.SecuredUrl,
            headers = new Dictionary<string, string> { ["X-Api-Key"] = ProvidersApp.McpApiKey, ["X-Client"] = "tests" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        Assert.Equal("tests", server.Headers["X-Client"]);
        Assert.False(server.Headers.ContainsKey("X-Api-Key"));
        Assert.Equal("...2e1b", server.SecretHeaders["X-Api-Key"]);
        var listed = await client.GetStringAsync("/api/mcp-servers");
        Assert.DoesNotContain(ProvidersApp.McpApiKey, listed, StringComparison.Ordinal);

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);
        Assert.True(result.Success, result.Error);
    }

    [Fact]
    public async Task A_server_deleted_while_an_update_of_it_is_applied_stays_deleted()
    {
        var tenant = ModularChatApp.NewUser();
        using var client = app.Client(tenant);
        var server = await (await client.PostJson("/api/mcp-servers", new { name = "short-lived", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl }))
            .ReadAs<McpServerDto>(HttpStatusCode.Created);

        // The update reads the server, then waits to write it while a delete holds its row; the delete commits first.
        await using var deleting = new NpgsqlConnection(app.PostgresConnectionString);
        await deleting.OpenAsync();
        await using var transaction = await deleting.BeginTransactionAsync();
        await using (var hold = new NpgsqlCommand("select 1 from modularchat.mt_doc_mcpserverconnection where tenant_id = @t and id = @id for update", deleting, transaction))
        {
            hold.Parameters.AddWithValue("t", tenant);
            hold.Parameters.AddWithValue("id", server.Id);
            Assert.Equal(1, await hold.ExecuteScalarAsync());
        }

        var update = client.PutJson($"/api/mcp-servers/{server.Id}", new { name = "renamed", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl });
        await using var observer = new NpgsqlConnection(app.PostgresConnectionString);
        await observer.OpenAsync();
        await Eventually.Until(async () =>
        {
            await using var waiting = new NpgsqlCommand(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%mcpserverconnection%' and pid <> pg_backend_pid()", observer);
            return (long)(await waiting.ExecuteScalarAsync())!;
        }, n => n > 0, what: "the update waiting for the server's row");
        await using (var delete = new NpgsqlCommand("delete from modularchat.mt_doc_mcpserverconnection where tenant_id = @t and id = @id", deleting, transaction))
        {
            delete.Parameters.AddWithValue("t", tenant);
            delete.Parameters.AddWithValue("id", server.Id);
            Assert.Equal(1, await delete.ExecuteNonQueryAsync());
        }

        await transaction.CommitAsync();

        await (await update).ShouldBeProblem(404);
        await (await client.GetAsync($"/api/mcp-servers/{server.Id}")).ShouldBeProblem(404);
        Assert.Equal("[]", await client.GetStringAsync("/api/mcp-servers"));
    }

    [Fact]
    public async Task Replacing_a_server_keeps_the_secrets_left_out_and_forgets_its_tools_when_the_connection_changes()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "secured", transport = "streamable-http", url = app.Mcp.SecuredUrl,
            headers = new Dictionary<string, string> { ["X-Api-Key"] = ProvidersApp.McpApiKey, ["X-Client"] = "tests" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        Assert.True((await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK)).Success);

        // The secret header is not sent back (clients never see it): it stays; the plain one changes, so the tools must be tested again.
        var replaced = await (await client.PutJson($"/api/mcp-servers/{server.Id}", new
        {
            name = "secured-2", transport = "streamable-http", url = app.Mcp.SecuredUrl, headers = new Dictionary<string, string> { ["X-Client"] = "tests-2" },
        })).ReadAs<McpServerDto>(HttpStatusCode.OK);
        Assert.Equal(("secured-2", "tests-2", "...2e1b"), (replaced.Name, replaced.Headers["X-Client"], replaced.SecretHeaders["X-Api-Key"]));
        Assert.Null(replaced.Tools);
        var retested = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);
        Assert.True(retested.Success, retested.Error); // the kept key still decrypts and is sent

        // A new name alone keeps the tools of the last test.
        var renamed = await (await client.PutJson($"/api/mcp-servers/{server.Id}", new
        {
            name = "secured-3", transport = "streamable-http", url = app.Mcp.SecuredUrl, headers = new Dictionary<string, string> { ["X-Client"] = "tests-2" },
        })).ReadAs<McpServerDto>(HttpStatusCode.OK);
        Assert.NotNull(renamed.Tools);

        // {} removes the secret headers: the server refuses the connection without its key.
        var stripped = await (await client.PutJson($"/api/mcp-servers/{server.Id}", new
        {
            name = "secured-3", transport = "streamable-http", url = app.Mcp.SecuredUrl, secretHeaders = new Dictionary<string, string>(),
        })).ReadAs<McpServerDto>(HttpStatusCode.OK);
        Assert.Empty(stripped.SecretHeaders);
        Assert.Empty(stripped.Headers);
        var refused = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);
        Assert.False(refused.Success);
        Assert.Contains("401", refused.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(ProvidersApp.McpApiKey, await client.GetStringAsync("/api/mcp-servers"), StringComparison.Ordinal);

        // Invalid settings answer 400 naming the field and change nothing.
        await (await client.PutJson($"/api/mcp-servers/{server.Id}", new { name = "x", transport = "ftp" })).ShouldNameField("transport");
        await (await client.PutJson($"/api/mcp-servers/{server.Id}", new { name = "x", transport = "sse" })).ShouldNameField("url");
        Assert.Equal("secured-3", (await (await client.GetAsync($"/api/mcp-servers/{server.Id}")).ReadAs<McpServerDto>(HttpStatusCode.OK)).Name);
    }

    [Fact]
    public async Task Stored_secrets_are_kept_for_the_same_server_only()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var http = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "secured", transport = "streamable-http", url = app.Mcp.SecuredUrl,
            secretHeaders = new Dictionary<string, string> { ["X-Api-Key"] = ProvidersApp.McpApiKey },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);

        // Another host without the secret headers: refused, and nothing changes.
        var elsewhere = app.Mcp.SecuredUrl.Replace("127.0.0.1", "127.0.0.2", StringComparison.Ordinal);
        await (await client.PutJson($"/api/mcp-servers/{http.Id}", new { name = "secured", transport = "streamable-http", url = elsewhere })).ShouldNameField("secretHeaders");
        Assert.Equal(app.Mcp.SecuredUrl, (await (await client.GetAsync($"/api/mcp-servers/{http.Id}")).ReadAs<McpServerDto>(HttpStatusCode.OK)).Url);

        // Another path on the same server keeps them; sent again they may move.
        var samePlace = await (await client.PutJson($"/api/mcp-servers/{http.Id}", new { name = "secured", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl }))
            .ReadAs<McpServerDto>(HttpStatusCode.OK);
        Assert.Equal("...2e1b", samePlace.SecretHeaders["X-Api-Key"]);
        (await client.PutJson($"/api/mcp-servers/{http.Id}", new
        {
            name = "secured", transport = "streamable-http", url = elsewhere, secretHeaders = new Dictionary<string, string> { ["X-Api-Key"] = "for-there-0123" },
        })).EnsureSuccessStatusCode();

        // A stdio server is the program its command line runs: other arguments need the secret variables sent again.
        const string api = "https://api.example.com";
        var stdio = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "local", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll },
            environment = new Dictionary<string, string> { ["API_BASE_URL"] = api },
            secretEnvironment = new Dictionary<string, string> { ["VAULT_TOKEN"] = "vault-token-0123456789" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        await (await client.PutJson($"/api/mcp-servers/{stdio.Id}", new
        {
            name = "local", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll, "--verbose" },
            environment = new Dictionary<string, string> { ["API_BASE_URL"] = api },
        })).ShouldNameField("secretEnvironment");
        var sameProgram = await (await client.PutJson($"/api/mcp-servers/{stdio.Id}", new
        {
            name = "local-2", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll },
            environment = new Dictionary<string, string> { ["API_BASE_URL"] = api },
        })).ReadAs<McpServerDto>(HttpStatusCode.OK);
        Assert.Equal(["VAULT_TOKEN"], sameProgram.SecretEnvironment.Keys);
        // Nor is the same program with other plain variables: one may tell it where to send the secret (its API's address,
        // a proxy, a certificate file), and no list of such names is complete. Changed, added, removed, or a new secret value.
        Dictionary<string, string>[] changes =
        [
            new() { ["API_BASE_URL"] = "http://127.0.0.1:8888" },
            new() { ["API_BASE_URL"] = api, ["LOG_LEVEL"] = "debug" },
            new() { ["API_BASE_URL"] = api, ["HTTPS_PROXY"] = "http://127.0.0.1:8888" },
            new() { ["API_BASE_URL"] = api, ["SSL_CERT_FILE"] = "/tmp/mine.pem" },
            new() { ["API_BASE_URL"] = api, ["API_TOKEN"] = "mine-0123456789" },
            [],
        ];
        foreach (var environment in changes)
        {
            var refused = await client.PutJson($"/api/mcp-servers/{stdio.Id}", new
            {
                name = "local-2", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll }, environment,
            });
            var errors = (await refused.ShouldBeProblem(400)).GetProperty("errors");
            Assert.Contains("when 'environment' changes", errors.GetProperty("secretEnvironment")[0].GetString(), StringComparison.Ordinal);
        }

        var unchanged = await (await client.GetAsync($"/api/mcp-servers/{stdio.Id}")).ReadAs<McpServerDto>(HttpStatusCode.OK);
        Assert.Equal(api, unchanged.Environment["API_BASE_URL"]);
        Assert.Equal(["VAULT_TOKEN"], unchanged.SecretEnvironment.Keys);
        // Sent again, they go with the new settings.
        var moved = await (await client.PutJson($"/api/mcp-servers/{stdio.Id}", new
        {
            name = "local-2", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll },
            environment = new Dictionary<string, string> { ["API_BASE_URL"] = "http://127.0.0.1:8888" },
            secretEnvironment = new Dictionary<string, string> { ["VAULT_TOKEN"] = "for-there-0123456789" },
        })).ReadAs<McpServerDto>(HttpStatusCode.OK);
        Assert.Equal("...6789", moved.SecretEnvironment["VAULT_TOKEN"]);
    }

    [Fact]
    public async Task A_server_that_echoes_a_wrong_secret_header_in_its_error_does_not_leak_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        const string wrong = "wrong-secret-value-998877";
        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "secured", transport = "streamable-http", url = app.Mcp.SecuredUrl,
            secretHeaders = new Dictionary<string, string> { ["X-Api-Key"] = wrong, ["Authorization"] = "Bearer tok-abcdef123456" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);

        var response = await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null);
        var body = await response.Content.ReadAsStringAsync();
        var result = await response.ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Contains("401", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(wrong, body, StringComparison.Ordinal);
        Assert.DoesNotContain("tok-abcdef123456", body, StringComparison.Ordinal);
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(wrong, StringComparison.Ordinal) || l.Contains("tok-abcdef123456", StringComparison.Ordinal));
    }

    /// <summary>The bare token of the <c>Authorization: Bearer ...</c> header the token tests store: no shape the general scrubbing knows.</summary>
    internal const string BareToken = "a9f3c2e7b1d54f08";

    /// <summary>An X-Api-Key the token tests store: JSON escapes its '+' and '&lt;'.</summary>
    internal const string ApiKey = "wk+9f3c2a7e1d5b<6x";

    /// <summary>Adds a server of <see cref="UnrulyMcpServer"/> in <paramref name="mode"/> with the secret headers of the token tests.</summary>
    internal static async Task<McpServerDto> AddTokenServerAsync(HttpClient client, ProvidersApp app, string name, string mode)
        => await (await client.PostJson("/api/mcp-servers", new
        {
            name, transport = "streamable-http", url = app.Mcp.UnrulyUrl(mode),
            secretHeaders = new Dictionary<string, string> { ["Authorization"] = "Bearer " + BareToken, ["X-Api-Key"] = ApiKey },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);

    [Fact]
    public async Task A_handshake_error_that_names_the_bare_bearer_token_is_answered_and_logged_without_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await AddTokenServerAsync(client, app, "refusing", "token-refused");

        var response = await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null);
        var body = await response.Content.ReadAsStringAsync();
        var result = await response.ReadAs<McpTestDto>(HttpStatusCode.OK);

        // Only the whole header value was a secret: "Token a9f3... has expired" went on as the server wrote it.
        Assert.False(result.Success);
        Assert.Contains("Token *** has expired", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(BareToken, body, StringComparison.Ordinal);
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(BareToken, StringComparison.Ordinal));
    }

    [Fact]
    public async Task Tool_descriptions_and_schemas_that_repeat_the_servers_secrets_are_answered_and_stored_without_them()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await AddTokenServerAsync(client, app, "describes", "token");

        var response = await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null);
        var tested = await response.Content.ReadAsStringAsync();
        var result = await response.ReadAs<McpTestDto>(HttpStatusCode.OK);
        var read = await client.GetStringAsync($"/api/mcp-servers/{server.Id}");
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var select = new NpgsqlCommand("select data::text from modularchat.mt_doc_mcpserverconnection where id = @id", connection);
        select.Parameters.AddWithValue("id", server.Id);
        var stored = (string)(await select.ExecuteScalarAsync())!;

        Assert.True(result.Success, result.Error);
        var whoami = result.Tools.Single(t => t.Name == "whoami");
        Assert.Equal("Says who the caller is. Send the header Authorization: ***", whoami.Description); // the rest of it is kept
        Assert.Equal("An API key, e.g. ***", whoami.InputSchema.GetProperty("properties").GetProperty("key").GetProperty("description").GetString());
        // As JSON writes them, escaped or not (the document stores the schema as a string inside JSON: escaped twice).
        string[] leaks = [BareToken, ApiKey, "wk\\u002B9f3c2a7e1d5b", "wk\\\\u002B9f3c2a7e1d5b", "wk+9f3c2a7e1d5b"];
        foreach (var leak in leaks)
        {
            Assert.DoesNotContain(leak, tested, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain(leak, read, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain(leak, stored, StringComparison.OrdinalIgnoreCase);
        }
    }

    [Fact]
    public async Task A_tool_whose_name_holds_the_servers_secret_is_left_out_of_its_list_and_of_what_the_model_is_offered()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var server = await AddTokenServerAsync(client, app, "names", "token-name");

        var response = await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null);
        var tested = await response.Content.ReadAsStringAsync();
        var result = await response.ReadAs<McpTestDto>(HttpStatusCode.OK);

        // It used to be kept, answered, stored and offered to the model as "whoami_<the bare token>".
        Assert.True(result.Success, result.Error);
        Assert.Equal(["expired"], result.Tools.Select(t => t.Name));
        Assert.Contains("A tool is left out: its name holds one of the server's secrets.", result.Warnings);
        Assert.DoesNotContain(BareToken, tested, StringComparison.Ordinal);
        Assert.DoesNotContain(BareToken, await client.GetStringAsync($"/api/mcp-servers/{server.Id}"), StringComparison.Ordinal);
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(BareToken, StringComparison.Ordinal));

        // A list stored before tool names were looked at still holds it: the model is not offered it.
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(user))
        {
            var stored = (await session.LoadAsync<McpServerConnection>(server.Id))!;
            stored.Tools = [new McpToolInfo { Name = "whoami_" + BareToken, InputSchema = """{"type":"object"}""" }, .. stored.Tools!];
            session.Store(stored);
            await session.SaveChangesAsync();
        }

        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = ChatTests.Marker();
        app.Model.Responder = ChatTests.Answer(marker, _ => ModularChat.Testing.Fakes.FakeReply.Text("ok"), app.Model.Responder);
        await client.ChatAsync(conversation, $"{marker} which tools?");
        Assert.Equal(["expired"], app.Model.Requests.First(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).ToolNames);
    }

    [Fact]
    public async Task A_stored_list_from_before_tool_names_were_looked_at_is_answered_without_a_tool_whose_name_holds_the_servers_secret()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var server = await AddTokenServerAsync(client, app, "stored-names", "token-name");
        // Stored as an older version stored a test's list: the tool named with the server's bearer token kept.
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(user))
        {
            var stored = (await session.LoadAsync<McpServerConnection>(server.Id))!;
            stored.Tools =
            [
                new McpToolInfo { Name = "whoami_" + BareToken, InputSchema = """{"type":"object"}""" },
                new McpToolInfo { Name = "expired", InputSchema = """{"type":"object"}""" },
            ];
            stored.ToolsRefreshedAt = DateTimeOffset.UtcNow;
            session.Store(stored);
            await session.SaveChangesAsync();
        }

        var one = await client.GetStringAsync($"/api/mcp-servers/{server.Id}");
        var all = await client.GetStringAsync("/api/mcp-servers");

        // It used to be answered as stored, until the server's next test replaced the list.
        Assert.DoesNotContain(BareToken, one, StringComparison.Ordinal);
        Assert.DoesNotContain(BareToken, all, StringComparison.Ordinal);
        Assert.Equal(["expired"], (await client.GetFromJsonAsync<McpServerDto>($"/api/mcp-servers/{server.Id}"))!.Tools!.Select(t => t.Name));
        Assert.Contains(app.Logs.Entries, e => e.Level == Microsoft.Extensions.Logging.LogLevel.Warning
            && e.Message.Contains($"The stored tool list of MCP server stored-names ({server.Id}) holds 1 tool(s) whose name holds one of its secrets", StringComparison.Ordinal));
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(BareToken, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_refused_connection_gives_a_clear_result()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await (await client.PostJson("/api/mcp-servers", new { name = "nobody", transport = "streamable-http", url = SilentServer.RefusedUrl() }))
            .ReadAs<McpServerDto>(HttpStatusCode.Created);

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Contains("refused", result.Error, StringComparison.Ordinal);
        Assert.Empty(result.Tools);
    }

    [Theory]
    [InlineData("streamable-http")]
    [InlineData("sse")]
    public async Task A_server_that_never_answers_gives_a_clear_result_within_the_configured_timeout(string transport)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await (await client.PostJson("/api/mcp-servers", new { name = "silent", transport, url = app.Silent.Url }))
            .ReadAs<McpServerDto>(HttpStatusCode.Created);
        using var _ = app.ShortMcpTimeouts();

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Contains("within 3 s", result.Error, StringComparison.Ordinal);
        // Bounded by Mcp:ConnectTimeout (3 s here), not a hang; generous slack for a busy machine.
        Assert.InRange(result.LatencyMs, 2500, 30_000);
    }

    [Fact]
    public async Task The_connect_deadline_runs_on_the_clock_the_host_gives_it()
    {
        // A clock of the test's own for the MCP connections: Mcp:ConnectTimeout passes when it says so, not five minutes later.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var node = await app.StartHostAsync(
            new Dictionary<string, string?> { ["Mcp:ConnectTimeout"] = "00:05:00" },
            services => services.AddSingleton(sp => ActivatorUtilities.CreateInstance<McpConnector>(sp, (TimeProvider)clock)));
        using var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser()));
        var server = await (await client.PostJson("/api/mcp-servers", new { name = "silent", transport = "streamable-http", url = app.Silent.Url }))
            .ReadAs<McpServerDto>(HttpStatusCode.Created);
        var accepted = app.Silent.Accepted;

        var test = client.PostAsync($"/api/mcp-servers/{server.Id}/test", null);
        await Eventually.Until(() => Task.FromResult(app.Silent.Accepted), a => a > accepted, what: "The test never connected to the silent server");
        clock.Advance(TimeSpan.FromMinutes(5));
        // Bounded far below the five minutes: on the wall clock the test would still be waiting.
        var result = await (await test.WaitAsync(TimeSpan.FromSeconds(60))).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Equal($"No answer from {app.Silent.Url} within 300 s (Mcp:ConnectTimeout).", result.Error);
    }

    [Fact]
    public async Task A_stdio_program_that_is_not_an_mcp_server_gives_a_clear_result()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "not-mcp", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { "--version" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        // The reason: it ended (having written its version, no JSON-RPC) before it answered the handshake.
        Assert.StartsWith($"The program '{ProvidersApp.Dotnet}' exited (exit code 0)", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_tool_list_with_unusable_entries_keeps_the_usable_tools_and_names_each_one_left_out()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await client.AddMcpServerAsync("odd", app.Mcp.UnrulyUrl("odd"));

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        // Before, a single bad entry failed the whole test (a name with a NUL failed it with PostgreSQL's error text).
        Assert.True(result.Success, result.Error);
        Assert.Equal(UnrulyMcpServer.OddKeeps, result.Tools.Select(t => t.Name));
        Assert.Equal(1_024, result.Tools.Single(t => t.Name == "verbose").Description!.Length); // Mcp:MaxToolDescriptionLength
        Assert.Equal("object", result.Tools.Single(t => t.Name == "bare").InputSchema.GetProperty("type").GetString());
        Assert.Collection(result.Warnings,
            w => Assert.Equal("An entry of the tool list is not an object; it is left out.", w),
            w => Assert.Equal("A tool without a name is left out.", w),
            w => Assert.Equal("The tool 'bad?name' is left out: its name contains control characters.", w),
            w => Assert.Contains("its name is longer than 128 characters", w, StringComparison.Ordinal),
            w => Assert.Equal("The tool 'lookup' is listed twice; the first is kept.", w),
            w => Assert.Equal("The tool 'stringly' is left out: its inputSchema is not a JSON schema of an object.", w),
            w => Assert.Equal("The tool 'shapeless' is left out: its inputSchema is not a JSON schema of an object.", w),
            w => Assert.Contains("The tool 'enormous' is left out: its inputSchema has 20,", w, StringComparison.Ordinal));

        var stored = await (await client.GetAsync($"/api/mcp-servers/{server.Id}")).ReadAs<McpServerDto>(HttpStatusCode.OK);
        Assert.Equal(UnrulyMcpServer.OddKeeps, stored.Tools!.Select(t => t.Name));
    }

    [Theory]
    [InlineData("many", 128, "The server lists more than 128 tools; the first 128 are kept (Mcp:MaxToolsPerServer).")]
    [InlineData("endless", 20, "The server's tool list has more than 20 pages; the tools of the first 20 are kept (Mcp:MaxToolListPages).")]
    [InlineData("loop", 3, "The server's tool list came back to an earlier page (cursor 'a'); listing stopped there.")]
    public async Task A_tool_list_that_does_not_end_is_cut_off_with_a_warning(string mode, int kept, string warning)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await client.AddMcpServerAsync(mode, app.Mcp.UnrulyUrl(mode));

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.True(result.Success, result.Error);
        Assert.Equal(kept, result.Tools.Count);
        Assert.Equal(warning, Assert.Single(result.Warnings));
    }

    [Theory]
    [InlineData("streamable-http")]
    [InlineData("sse")]
    public async Task A_tool_list_larger_than_a_response_may_be_fails_the_test_naming_the_limit(string transport)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var server = await client.AddMcpServerAsync("flood", transport == "sse" ? app.Mcp.UnrulySseUrl("flood") : app.Mcp.UnrulyUrl("flood"), transport);

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Contains("OutboundNetwork:MaxResponseBytes", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_sse_server_that_announces_another_origin_does_not_get_the_secret_headers_sent_there()
    {
        // The legacy SSE transport posts to the endpoint the stream announces; the SDK follows any URL it is given.
        var elsewhere = new TcpListener(IPAddress.Loopback, 0);
        elsewhere.Start();
        try
        {
            var accept = elsewhere.AcceptTcpClientAsync();
            using var client = app.Client(ModularChatApp.NewUser());
            var server = await (await client.PostJson("/api/mcp-servers", new
            {
                name = "elsewhere", transport = "sse", url = app.Mcp.SseElsewhereUrl(((IPEndPoint)elsewhere.LocalEndpoint).Port),
                secretHeaders = new Dictionary<string, string> { ["X-Api-Key"] = ProvidersApp.McpApiKey },
            })).ReadAs<McpServerDto>(HttpStatusCode.Created);

            var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

            Assert.False(result.Success);
            Assert.Contains("another origin", result.Error, StringComparison.Ordinal);
            Assert.False(accept.IsCompleted, "the service connected to the origin the server announced");
        }
        finally
        {
            elsewhere.Stop();
        }
    }

    [Fact]
    public async Task A_change_made_while_a_test_runs_is_kept_and_the_test_stores_nothing_over_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var (server, test, release) = await TestHeldAtListingAsync(client);
        var replaced = await client.PutAsync($"/api/mcp-servers/{server.Id}", JsonContent.Create(new
        {
            name = "renamed", transport = "streamable-http", url = app.Mcp.UnrulyUrl("odd"),
            secretHeaders = new Dictionary<string, string> { ["X-Api-Key"] = ProvidersApp.McpApiKey },
        }));
        Assert.Equal(HttpStatusCode.OK, replaced.StatusCode);
        release();
        var result = await (await test).ReadAs<McpTestDto>(HttpStatusCode.OK);

        // The test wrote back the server as it had read it, tools and all, over the change.
        Assert.True(result.Success, result.Error);
        Assert.Contains(result.Warnings, w => w.Contains("while it was being tested", StringComparison.Ordinal));
        var stored = await (await client.GetAsync($"/api/mcp-servers/{server.Id}")).ReadAs<McpServerDto>(HttpStatusCode.OK);
        Assert.Equal(("renamed", app.Mcp.UnrulyUrl("odd")), (stored.Name, stored.Url));
        Assert.True(stored.SecretHeaders.ContainsKey("X-Api-Key"));
        Assert.Null(stored.Tools);
    }

    [Fact]
    public async Task A_server_deleted_while_a_test_runs_stays_deleted()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var (server, test, release) = await TestHeldAtListingAsync(client);
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/mcp-servers/{server.Id}")).StatusCode);
        release();
        await (await test).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync($"/api/mcp-servers/{server.Id}")).StatusCode);
        Assert.DoesNotContain(await (await client.GetAsync("/api/mcp-servers")).ReadAs<List<McpServerDto>>(HttpStatusCode.OK), s => s.Id == server.Id);
    }

    /// <summary>A new server's test, started and held while the server is asked for its tools, until <c>release</c>.</summary>
    private async Task<(McpServerDto Server, Task<HttpResponseMessage> Test, Action Release)> TestHeldAtListingAsync(HttpClient client)
    {
        var key = Guid.NewGuid().ToString("N");
        var (listing, release) = UnrulyMcpServer.Gate(key);
        var server = await client.AddMcpServerAsync("gated", app.Mcp.UnrulyUrl("gated-" + key));
        var test = client.PostAsync($"/api/mcp-servers/{server.Id}/test", null);
        await listing.WaitAsync(TimeSpan.FromSeconds(10));
        return (server, test, release);
    }

    public static TheoryData<string, string> BadServers => new()
    {
        { """{"transport":"sse","url":"http://127.0.0.1:1/sse"}""", "name" },
        { """{"name":"\u200B\u00AD","transport":"sse","url":"http://127.0.0.1:1/sse"}""", "name" }, // invisible characters only
        { """{"name":"x","transport":"websocket","url":"http://127.0.0.1:1/"}""", "transport" },
        { """{"name":"x","url":"http://127.0.0.1:1/"}""", "transport" },
        { """{"name":"x","transport":"sse"}""", "url" },
        { """{"name":"x","transport":"streamable-http","url":"nope"}""", "url" },
        { """{"name":"x","transport":"streamable-http","url":"file:///etc/passwd"}""", "url" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","headers":{"Host":"evil"}}""", "headers" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","headers":{"bad header":"v"}}""", "headers" },
        { """{"name":"x","transport":"stdio"}""", "command" },
        { """{"name":"x","transport":"stdio","command":"/bin/sh","arguments":["-c","id"]}""", "command" },
        // Variables that change which code an allowlisted program loads.
        { """{"name":"x","transport":"stdio","command":"/bin/sh","environment":{"LD_PRELOAD":"/tmp/evil.so"}}""", "environment" },
        { """{"name":"x","transport":"stdio","command":"/bin/sh","environment":{"PATH":"/tmp/bin"}}""", "environment" },
        { """{"name":"x","transport":"stdio","command":"/bin/sh","secretEnvironment":{"NODE_OPTIONS":"--require /tmp/evil.js"}}""", "secretEnvironment" },
        { """{"name":"x","transport":"stdio","command":"/bin/sh","environment":{"DOTNET_STARTUP_HOOKS":"/tmp/evil.dll"}}""", "environment" },
        { """{"name":"x","transport":"stdio","command":"/bin/sh","environment":{"UV_INDEX_URL":"https://evil.example/simple"}}""", "environment" },
        // Header values HTTP cannot carry, credentials in the URL's query, a URL too long to be a server's.
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","secretHeaders":{"X-Api-Key":"sk-ünïcode-kéy-1234"}}""", "secretHeaders" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","headers":{"X-Team":"équipe"}}""", "headers" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/mcp?token=zzz"}""", "url" },
        // One header named twice (names ignore case), or one a request cannot carry: the server could never be reached with
        // them (before, stored, then every test failed "An item with the same key has already been added").
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","headers":{"X-Trace":"a","x-trace":"b"}}""", "headers" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","headers":{"X-Team":"a"},"secretHeaders":{"x-team":"b"}}""", "headers" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","headers":{"Content-Encoding":"gzip"}}""", "headers" },
        { $$"""{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/{{new string('a', 100_000)}}"}""", "url" },
        // A lone surrogate (\udc00 with no high half) is no text: refused where the body is read, naming the field.
        { """{"name":"x\udc00","transport":"sse","url":"http://127.0.0.1:1/sse"}""", "name" },
        // The settings of the other transports, which were dropped without a word (and so never checked), as 'command' is refused.
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","arguments":["--verbose"]}""", "arguments" },
        { """{"name":"x","transport":"sse","url":"http://127.0.0.1:1/sse","environment":{"REGION":"eu"}}""", "environment" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","secretEnvironment":{"LD_PRELOAD":"/tmp/evil.so"}}""", "secretEnvironment" },
        { """{"name":"x","transport":"stdio","command":"/bin/sh","headers":{"X-Team":"a"}}""", "headers" },
        { """{"name":"x","transport":"stdio","command":"/bin/sh","secretHeaders":{"Authorization":"Bearer zzz"}}""", "secretHeaders" },
        // What is wrong with a secret header (or variable) is named by its own field, not by 'headers' ('environment').
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","secretHeaders":{"bad header":"v"}}""", "secretHeaders" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","secretHeaders":{"Host":"evil"}}""", "secretHeaders" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","secretHeaders":{"Content-Encoding":"gzip"}}""", "secretHeaders" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","secretHeaders":{"X-Api-Key":"a\r\nX-Other: b"}}""", "secretHeaders" },
        { """{"name":"x","transport":"streamable-http","url":"http://127.0.0.1:1/","secretHeaders":{"X-Key":"a","x-key":"b"}}""", "secretHeaders" },
        { """{"name":"x","transport":"stdio","command":"/bin/sh","secretEnvironment":{"1BAD":"v"}}""", "secretEnvironment" },
    };

    [Theory]
    [InlineData("environment", "GIT_CONFIG_COUNT", "1")] // git's settings as variables: core.fsmonitor, core.pager, ... run commands
    [InlineData("secretEnvironment", "GIT_CONFIG_KEY_0", "core.fsmonitor")]
    [InlineData("environment", "GIT_SSH_COMMAND", "sh -c id")]
    [InlineData("environment", "SHELL", "/tmp/evil")]
    [InlineData("environment", "EDITOR", "id")]
    [InlineData("environment", "VISUAL", "id")]
    [InlineData("environment", "PAGER", "id")]
    [InlineData("environment", "GIT_PAGER", "id")]
    [InlineData("environment", "MANPAGER", "id")]
    [InlineData("environment", "LESSOPEN", "|id %s")]
    [InlineData("environment", "LESSCLOSE", "id %s %s")]
    [InlineData("environment", "SSH_ASKPASS", "/tmp/evil")]
    [InlineData("environment", "GIT_ASKPASS", "/tmp/evil")]
    [InlineData("environment", "SUDO_ASKPASS", "/tmp/evil")]
    [InlineData("environment", "OPENSSL_CONF", "/tmp/evil.cnf")]
    [InlineData("environment", "OPENSSL_MODULES", "/tmp")]
    [InlineData("environment", "OPENSSL_ENGINES", "/tmp")]
    [InlineData("environment", "LUA_INIT", "os.execute('id')")]
    [InlineData("environment", "LUA_INIT_5_4", "os.execute('id')")]
    [InlineData("environment", "LUA_PATH", "/tmp/?.lua")]
    [InlineData("environment", "LUA_CPATH", "/tmp/?.so")]
    [InlineData("environment", "PHPRC", "/tmp")]
    [InlineData("environment", "PHP_INI_SCAN_DIR", "/tmp")]
    [InlineData("environment", "BASHOPTS", "extdebug")]
    [InlineData("environment", "SHELLOPTS", "xtrace")]
    [InlineData("environment", "PROMPT_COMMAND", "id")]
    [InlineData("environment", "PS4", "$(id)")]
    [InlineData("environment", "HOME", "/tmp/evil")]
    [InlineData("environment", "XDG_CONFIG_HOME", "/tmp/evil")]
    [InlineData("environment", "BROWSER", "id")]
    [InlineData("environment", "TAR_OPTIONS", "--to-command=id")]
    [InlineData("environment", "JAVA_OPTS", "-javaagent:/tmp/evil.jar")]
    [InlineData("environment", "KUBECONFIG", "/tmp/evil")]
    [InlineData("environment", "RUSTC_WRAPPER", "/tmp/evil")]
    [InlineData("environment", "GOFLAGS", "-toolexec=/tmp/evil")]
    [InlineData("environment", "PERL5OPT", "-Mevil")]
    [InlineData("environment", "PYTHONSTARTUP", "/tmp/evil.py")]
    [InlineData("environment", "PYTHONPATH", "/tmp")]
    [InlineData("environment", "NODE_OPTIONS", "--require /tmp/evil.js")]
    [InlineData("environment", "RUBYOPT", "-r/tmp/evil")]
    [InlineData("environment", "JAVA_TOOL_OPTIONS", "-javaagent:/tmp/evil.jar")]
    [InlineData("secretEnvironment", "DOTNET_STARTUP_HOOKS", "/tmp/evil.dll")]
    public async Task A_variable_that_makes_an_allowlisted_program_run_other_code_is_refused_naming_it(string field, string name, string value)
    {
        using var client = app.Client(ModularChatApp.NewUser());

        var response = await client.PostJson("/api/mcp-servers", new Dictionary<string, object>
        {
            ["name"] = "x", ["transport"] = "stdio", ["command"] = ProvidersApp.Dotnet, ["arguments"] = new[] { ProvidersApp.StdioServerDll },
            [field] = new Dictionary<string, string> { ["LOG_LEVEL"] = "debug", [name] = value },
        });

        var errors = (await response.ShouldBeProblem(400)).GetProperty("errors");
        Assert.Equal([field], errors.EnumerateObject().Select(e => e.Name));
        Assert.Contains($"may not set {name}:", errors.GetProperty(field)[0].GetString(), StringComparison.Ordinal);
        Assert.Empty(await (await client.GetAsync("/api/mcp-servers")).ReadAs<List<McpServerDto>>(HttpStatusCode.OK));
    }

    [Fact]
    public async Task Variables_that_only_configure_a_program_stay_allowed()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var environment = new Dictionary<string, string>
        {
            ["LOG_LEVEL"] = "debug", ["RUST_LOG"] = "info", ["API_BASE_URL"] = "https://api.example.com", ["GITHUB_HOST"] = "github.example.com",
            ["HTTPS_PROXY"] = "http://proxy.example:3128", ["LANG"] = "C.UTF-8", ["TZ"] = "UTC", ["MANAGER_URL"] = "https://m.example.com",
            ["LESSON"] = "1",
        };

        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "x", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll }, environment,
            secretEnvironment = new Dictionary<string, string> { ["GITHUB_TOKEN"] = "ghp-0123456789abcdef" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);

        Assert.Equal(environment.Keys.Order(), server.Environment.Keys.Order());
    }

    [Fact]
    public async Task When_the_operator_lists_the_variables_stdio_programs_may_get_any_other_is_refused_when_stored_and_when_run()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var pidFile = Path.Combine(Path.GetTempPath(), $"mcp-env-{Guid.NewGuid():N}.pid");
        // Stored before the operator listed the variables.
        var before = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "before", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll, "--pid-file", pidFile },
            environment = new Dictionary<string, string> { ["GREETING"] = "hello", ["LOG_FORMAT"] = "json" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        using var _ = app.AllowStdioEnvironment("GREETING", "MC_*");

        var allowed = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "allowed", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll },
            environment = new Dictionary<string, string> { ["GREETING"] = "hello", ["MC_REGION"] = "eu-west" },
            secretEnvironment = new Dictionary<string, string> { ["MC_TOKEN"] = "mc-token-0123456789" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        var plain = await client.PostJson("/api/mcp-servers", new
        {
            name = "plain", transport = "stdio", command = ProvidersApp.Dotnet,
            environment = new Dictionary<string, string> { ["GREETING"] = "hello", ["LOG_FORMAT"] = "json" },
        });
        var message = (await plain.ShouldBeProblem(400)).GetProperty("errors").GetProperty("environment")[0].GetString();
        Assert.Equal(
            "'environment' may not set LOG_FORMAT: stdio programs here may only be given GREETING, MC_* (Mcp:Stdio:AllowedEnvironment; " +
            "names compared exactly, '*' ends a prefix).", message);
        await (await client.PostJson("/api/mcp-servers", new
        {
            name = "secret", transport = "stdio", command = ProvidersApp.Dotnet, secretEnvironment = new Dictionary<string, string> { ["API_TOKEN"] = "tok-0123456789" },
        })).ShouldNameField("secretEnvironment");
        await (await client.PostJson("/api/mcp-servers", new
        {
            name = "case", transport = "stdio", command = ProvidersApp.Dotnet, environment = new Dictionary<string, string> { ["mc_region"] = "eu-west" },
        })).ShouldNameField("environment"); // a program sees mc_region and MC_REGION as two variables

        var ran = await (await client.PostAsync($"/api/mcp-servers/{allowed.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);
        Assert.True(ran.Success, ran.Error);
        var refused = await (await client.PostAsync($"/api/mcp-servers/{before.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);
        Assert.False(refused.Success);
        Assert.Equal(
            "The environment variable LOG_FORMAT is not one stdio programs may be given here (Mcp:Stdio:AllowedEnvironment). Remove it (PUT /api/mcp-servers/{id}).",
            refused.Error);
        Assert.False(File.Exists(pidFile), "the program was started");
    }

    [Fact]
    public async Task An_allowed_environment_entry_that_is_no_variable_name_stops_the_start_naming_it()
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { ["Mcp:Stdio:AllowedEnvironment:0"] = "GITHUB-*" }));

        Assert.Contains(Exceptions.Flatten(error),
            e => e is Microsoft.Extensions.Options.OptionsValidationException && e.Message.Contains("Mcp:Stdio:AllowedEnvironment", StringComparison.Ordinal)
                && e.Message.Contains("GITHUB-*", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("python3")] // README: full paths; a bare name ran whatever the service's PATH found first
    [InlineData("bin/server")]
    public async Task An_allowed_command_that_is_no_full_path_stops_the_start_naming_it(string command)
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { ["Mcp:Stdio:AllowedCommands:1"] = command }));

        Assert.Contains(Exceptions.Flatten(error),
            e => e is Microsoft.Extensions.Options.OptionsValidationException && e.Message.Contains("Mcp:Stdio:AllowedCommands", StringComparison.Ordinal)
                && e.Message.Contains($"'{command}'", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Settings_of_another_transport_are_refused_naming_the_field_and_nothing_is_stored()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var environment = Enumerable.Range(0, 51).ToDictionary(i => $"V{i}", i => "x");

        // Accepted before and dropped without a word: 51 variables (more than Mcp:MaxEnvironmentVariables) and a loader variable.
        var response = await client.PostJson("/api/mcp-servers", new
        {
            name = "x", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl, arguments = new[] { "--flag" }, environment,
            secretEnvironment = new Dictionary<string, string> { ["LD_PRELOAD"] = "/tmp/evil.so" },
        });

        var errors = (await response.ShouldBeProblem(400)).GetProperty("errors");
        Assert.Equal(["arguments", "environment", "secretEnvironment"], errors.EnumerateObject().Select(e => e.Name).Order());
        Assert.Contains("for the stdio transport only", errors.GetProperty("environment")[0].GetString(), StringComparison.Ordinal);
        Assert.Empty(await (await client.GetAsync("/api/mcp-servers")).ReadAs<List<McpServerDto>>(HttpStatusCode.OK));
    }

    [Fact]
    public async Task A_server_sent_back_as_it_was_read_is_accepted_with_the_empty_settings_of_the_other_transport()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var http = await client.AddMcpServerAsync("http", app.Mcp.StreamableHttpUrl);
        var stdio = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "stdio", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll },
            environment = new Dictionary<string, string> { ["REGION"] = "eu" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);

        // What a GET shows holds every field, those of the other transport empty: a client that sends it back is not refused.
        foreach (var server in new[] { http, stdio })
        {
            var read = await (await client.GetAsync($"/api/mcp-servers/{server.Id}")).ReadAs<McpServerDto>(HttpStatusCode.OK);
            var updated = await (await client.PutJson($"/api/mcp-servers/{server.Id}", new
            {
                read.Name, read.Transport, read.Command, read.Arguments, read.Environment, read.Url, read.Headers,
                secretEnvironment = new Dictionary<string, string>(), secretHeaders = new Dictionary<string, string>(),
            })).ReadAs<McpServerDto>(HttpStatusCode.OK);
            Assert.Equal((read.Command, read.Url), (updated.Command, updated.Url));
            Assert.Equal(read.Arguments, updated.Arguments);
            Assert.Equal(read.Environment, updated.Environment);
        }
    }

    [Fact]
    public async Task A_header_the_transport_sets_is_refused_with_one_message_naming_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var problem = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "x", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl, headers = new Dictionary<string, string> { ["Content-Type"] = "text/plain" },
        })).ShouldBeProblem(400);

        // It is reserved and a body's header too: one message, not both.
        var message = Assert.Single(problem.GetProperty("errors").GetProperty("headers").EnumerateArray()).GetString();
        Assert.Contains("content-type", message, StringComparison.Ordinal);
        Assert.Single(problem.GetProperty("errors").EnumerateObject());
    }

    [Fact]
    public async Task Mcp_server_settings_over_their_limits_answer_422_naming_the_field()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var big = new string('v', 1_000_000);
        var stdio = new { name = "x", transport = "stdio", command = ProvidersApp.Dotnet };
        var http = new { name = "x", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl };
        var cases = new (object Body, string Field)[]
        {
            (new { stdio.name, stdio.transport, stdio.command, arguments = new[] { big } }, "arguments"),
            (new { stdio.name, stdio.transport, stdio.command, environment = Enumerable.Range(0, 200).ToDictionary(i => $"V{i}", i => "x") }, "environment"),
            (new { stdio.name, stdio.transport, stdio.command, environment = new Dictionary<string, string> { ["BIG"] = big } }, "environment"),
            (new { stdio.name, stdio.transport, stdio.command, secretEnvironment = new Dictionary<string, string> { ["BIG"] = big } }, "secretEnvironment"),
            (new { http.name, http.transport, http.url, headers = new Dictionary<string, string> { ["X-Big"] = big } }, "headers"),
            (new { http.name, http.transport, http.url, secretHeaders = new Dictionary<string, string> { ["X-Big"] = big } }, "secretHeaders"),
        };

        foreach (var (body, field) in cases)
        {
            var problem = await (await client.PostJson("/api/mcp-servers", body)).ShouldBeProblem(422);
            Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), $"Expected an error for '{field}' in {problem}");
        }

        Assert.Empty(await (await client.GetAsync("/api/mcp-servers")).ReadAs<List<McpServerDto>>(HttpStatusCode.OK));
    }

    [Theory]
    [MemberData(nameof(BadServers))]
    public async Task Bad_mcp_server_input_answers_400_naming_the_field(string json, string field)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var response = await client.PostAsync("/api/mcp-servers", new StringContent(json, System.Text.Encoding.UTF8, "application/json"));
        await response.ShouldNameField(field);
    }

    [Fact]
    public async Task A_duplicate_name_answers_409_and_another_tenants_server_answers_404()
    {
        using var owner = app.Client(ModularChatApp.NewUser());
        using var stranger = app.Client(ModularChatApp.NewUser());
        var server = await (await owner.PostJson("/api/mcp-servers", new { name = "Tools", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl }))
            .ReadAs<McpServerDto>(HttpStatusCode.Created);
        await (await owner.PostJson("/api/mcp-servers", new { name = "tools", transport = "sse", url = app.Mcp.SseUrl })).ShouldBeProblem(409);

        await (await stranger.GetAsync($"/api/mcp-servers/{server.Id}")).ShouldBeProblem(404);
        await (await stranger.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ShouldBeProblem(404);
        await (await stranger.DeleteAsync($"/api/mcp-servers/{server.Id}")).ShouldBeProblem(404);
        await (await stranger.PutJson($"/api/mcp-servers/{server.Id}", new { name = "mine", transport = "sse", url = app.Mcp.SseUrl })).ShouldBeProblem(404);
        var other = await (await owner.PostJson("/api/mcp-servers", new { name = "Other", transport = "sse", url = app.Mcp.SseUrl }))
            .ReadAs<McpServerDto>(HttpStatusCode.Created);
        await (await owner.PutJson($"/api/mcp-servers/{other.Id}", new { name = "TOOLS", transport = "sse", url = app.Mcp.SseUrl })).ShouldBeProblem(409);

        Assert.Equal(HttpStatusCode.NoContent, (await owner.DeleteAsync($"/api/mcp-servers/{server.Id}")).StatusCode);
        await (await owner.GetAsync($"/api/mcp-servers/{server.Id}")).ShouldBeProblem(404);
    }

    [Theory]
    [InlineData("Caf\u00e9", "Cafe\u0301")] // composed (NFC), then decomposed (NFD): the same letters on screen
    [InlineData("\uff34\uff4f\uff4f\uff4c\uff53", "tools")] // full-width letters, then ASCII
    public async Task A_server_name_written_in_another_unicode_form_answers_409_on_create_and_on_rename(string taken, string sameName)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddMcpServerAsync(taken, app.Mcp.StreamableHttpUrl);

        var problem = await (await client.PostJson("/api/mcp-servers", new { name = sameName, transport = "sse", url = app.Mcp.SseUrl })).ShouldBeProblem(409);

        Assert.Equal("name", problem.GetProperty("field").GetString());
        Assert.Contains($"'{sameName}'", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var other = await client.AddMcpServerAsync("other", app.Mcp.SseUrl, "sse");
        var renamed = await client.PutJson($"/api/mcp-servers/{other.Id}", new { name = sameName, transport = "sse", url = app.Mcp.SseUrl });
        Assert.Equal("name", (await renamed.ShouldBeProblem(409)).GetProperty("field").GetString());
        Assert.Equal([taken, "other"], (await (await client.GetAsync("/api/mcp-servers")).ReadAs<List<McpServerDto>>(HttpStatusCode.OK)).Select(s => s.Name));
    }

    [Fact]
    public async Task A_server_stored_before_names_were_normalized_is_still_a_duplicate()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(user))
        {
            // As a version before this one stored it: NormalizedName was Trim().ToLowerInvariant(), full-width letters kept.
            session.Store(new McpServerConnection
            {
                Id = Guid.CreateVersion7(), TenantId = user, Name = "\uff34\uff4f\uff4f\uff4c\uff53", NormalizedName = "\uff54\uff4f\uff4f\uff4c\uff53",
                Transport = McpTransports.Sse, Url = app.Mcp.SseUrl, CreatedAt = DateTimeOffset.UtcNow,
            });
            await session.SaveChangesAsync();
        }

        await (await client.PostJson("/api/mcp-servers", new { name = "TOOLS", transport = "sse", url = app.Mcp.SseUrl })).ShouldBeProblem(409);
        var other = await client.AddMcpServerAsync("other", app.Mcp.SseUrl, "sse");
        await (await client.PutJson($"/api/mcp-servers/{other.Id}", new { name = "tools", transport = "sse", url = app.Mcp.SseUrl })).ShouldBeProblem(409);
    }

    [Fact]
    public async Task Stdio_is_off_unless_the_service_enables_it()
    {
        // A node without Mcp:Stdio (the tests' hosts turn it on): a stdio server is refused when it is stored.
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Mcp:Stdio:Enabled"] = null, ["Mcp:Stdio:AllowedCommands:0"] = null });
        using var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser()));

        var refused = await client.PostJson("/api/mcp-servers", new { name = "local", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll } });

        var problem = await refused.ShouldBeProblem(400);
        var errors = problem.GetProperty("errors").GetProperty("transport").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Contains("'transport' stdio runs a program on this server and is disabled here (Mcp:Stdio:Enabled).", errors);
        Assert.Empty(await (await client.GetAsync("/api/mcp-servers")).ReadAs<List<McpServerDto>>(HttpStatusCode.OK));
    }
}
