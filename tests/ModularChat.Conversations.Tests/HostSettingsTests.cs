using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using ModularChat.BuildingBlocks.Security;

namespace ModularChat.Conversations.Tests;

/// <summary>Settings the host reads before its services exist stop the start with a message naming them, as the validated options do.</summary>
[Collection(AppCollection.Name)]
public sealed class HostSettingsTests(ConversationsApp app)
{
    [Theory]
    [InlineData("Limits:MaxRequestBodyBytes", "0")] // every request with a body would answer 413
    [InlineData("Limits:MaxRequestBodyBytes", "-1")]
    [InlineData("Limits:MaxRequestBodyBytes", "lots")]
    [InlineData("Limits:MaxRequestLineBytes", "4096")] // under Kestrel's own limit
    [InlineData("Limits:MaxRequestLineBytes", "99999999999")]
    [InlineData("OpenTelemetry:OtlpEndpoint", "notaurl")]
    [InlineData("OpenTelemetry:OtlpEndpoint", "ftp://collector:4317")]
    [InlineData("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317:x")]
    [InlineData("OpenTelemetry:OtlpProtocol", "http/json")] // a protocol of the specification the .NET exporter does not speak
    [InlineData("OTEL_EXPORTER_OTLP_PROTOCOL", "http")]
    [InlineData("Cache:MaxEntryBytes", "1000")]
    [InlineData("Cache:RedisKeyPrefix", "my app:")]
    [InlineData("Cache:RedisKeyPrefix", "{app}:")] // a Redis Cluster hash tag: every key on one shard
    [InlineData("Cache:BumpWait", "00:00:00")] // every change would count as missed in Redis
    [InlineData("Cache:BumpWait", "00:01:00")]
    [InlineData("Messaging:StaleNodeTimeout", "00:00:05")] // under two health checks (7 s in this fixture): live nodes would be ejected
    [InlineData("Messaging:DeadLetterRetention", "-1.00:00:00")]
    [InlineData("Messaging:HealthCheckInterval", "00:00:00")] // the node heartbeat's timer threw, naming only its 'period'
    [InlineData("Messaging:HealthCheckInterval", "-00:00:01")]
    [InlineData("Messaging:HandledMessageCleanupInterval", "00:00:00")]
    [InlineData("Messaging:KeepHandledMessagesFor", "-00:00:05")]
    [InlineData("Messaging:DeadLetterCountInterval", "00:00:00")]
    [InlineData("Messaging:OutageLogInterval", "00:00:00")]
    [InlineData("Conversations:MaxExternalIdLength", "1000")] // longer than the unique index's rows can be (non-ASCII ids answered 500)
    public async Task A_bad_value_stops_the_start_naming_the_setting(string setting, string value)
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { [setting] = value }));

        Assert.Contains(Exceptions.Flatten(error), e => e is InvalidOperationException or Microsoft.Extensions.Options.OptionsValidationException
            && e.Message.Contains($"'{setting}'", StringComparison.Ordinal) && e.Message.Contains(value, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_gate_switch_that_is_not_true_or_false_stops_the_start_naming_it_not_a_byte_limit()
    {
        // The limits' binding fails as a whole: its refusal named Limits:MaxRequestBodyBytes, "(was '')".
        var error = await Assert.ThrowsAnyAsync<Exception>(
            () => app.StartHostAsync(new Dictionary<string, string?> { ["Limits:RefuseRequestsWhileDatabaseAway"] = "maybe" }));

        var refusal = Assert.Single(Exceptions.Flatten(error).OfType<ModularChat.BuildingBlocks.Options.StartRefusedException>());
        Assert.Equal("Configuration 'Limits:RefuseRequestsWhileDatabaseAway' must be true or false (was 'maybe').", refusal.Message);
    }

    [Theory]
    [InlineData("ConnectionStrings:Postgres", "Host=127.0.0.1;Port=abc;Password=pg-secret-1")] // Npgsql said "Couldn't set port"
    [InlineData("ConnectionStrings:Redis", "127.0.0.1:notaport,password=redis-secret-1")] // StackExchange.Redis said "No endpoints specified"
    public async Task A_malformed_connection_string_stops_the_start_naming_the_setting_but_not_its_value(string setting, string value)
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { [setting] = value }));

        Assert.Contains(Exceptions.Flatten(error), e => e is InvalidOperationException && e.Message.Contains($"'{setting}'", StringComparison.Ordinal));
        Assert.DoesNotContain("secret-1", error.ToString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Auth:SigningKey", PublishedKeys.ComposeSigningKey)] // anyone could sign a token for any tenant, as an operator
    [InlineData("DataProtection:MasterKey", PublishedKeys.ComposeMasterKey)] // anyone reading the database could decrypt its API keys
    public async Task A_key_published_in_docker_compose_stops_the_start_outside_development_without_being_printed(string setting, string key)
    {
        // The keys refused are the ones docker-compose.yml falls back to.
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (!File.Exists(Path.Combine(root.FullName, "ModularChat.sln")))
        {
            root = root.Parent!;
        }

        Assert.Contains($":-{key}}}", await File.ReadAllTextAsync(Path.Combine(root.FullName, "docker-compose.yml")), StringComparison.Ordinal);

        // This fixture's hosts run in the "Testing" environment, as a staging or production node would not be Development.
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { [setting] = $" {key}" }));

        Assert.Contains(Exceptions.Flatten(error), e => e is Microsoft.Extensions.Options.OptionsValidationException
            && e.Message.Contains($"'{setting}' is the key published in docker-compose.yml", StringComparison.Ordinal));
        Assert.DoesNotContain(key, error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_log_names_where_Redis_is_but_never_its_user_or_password()
    {
        const string password = "RedisPw-Never-Logged-42";
        var redis = StackExchange.Redis.ConfigurationOptions.Parse(app.RedisConnectionString).EndPoints[0].ToString()!;
        await using var node = await app.StartHostProcessAsync(new Dictionary<string, string>
        {
            // The node logs where its cache is when it starts (reachable or not, the same way).
            ["ConnectionStrings__Redis"] = $"{app.RedisConnectionString},user=cache-user,password={password}",
        });

        var output = await Eventually.Until(() => Task.FromResult(node.Output), o => o.Contains($" at {redis}", StringComparison.Ordinal), what: "Nothing logged about Redis");

        Assert.DoesNotContain(password, output, StringComparison.Ordinal);
        Assert.DoesNotContain("cache-user", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Readiness_probes_while_redis_is_down_do_not_log_a_warning_each()
    {
        // Redis configured where nothing listens: the node says so once; the probes answer Degraded without logging it each time.
        await using var node = await app.StartHostProcessAsync(new Dictionary<string, string>
        {
            ["ConnectionStrings__Redis"] = "127.0.0.1:1,connectTimeout=200,abortConnect=false",
        });
        using var probe = node.Client();
        for (var i = 0; i < 3; i++)
        {
            var ready = await probe.GetAsync("/health/ready");
            Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
            Assert.Contains("Degraded", await ready.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.DoesNotContain("Health check redis", node.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Started_from_another_directory_the_host_reads_the_settings_beside_it()
    {
        var elsewhere = Directory.CreateTempSubdirectory("modularchat-cwd-");
        try
        {
            await using var node = await app.StartHostProcessAsync(workingDirectory: elsewhere.FullName);

            var output = await Eventually.Until(() => Task.FromResult(node.Output), o => o.Contains("Content root path:", StringComparison.Ordinal), what: "No content root logged");
            Assert.Contains($"Content root path: {AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)}", output, StringComparison.Ordinal);
        }
        finally
        {
            elsewhere.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Queries_at_their_length_limit_in_any_script_get_through_the_web_server()
    {
        await using var node = await app.StartHostProcessAsync();
        using var client = node.Client(app.Token(ModularChatApp.NewUser()));
        var conversation = await client.NewConversation();
        Assert.Equal(HttpStatusCode.Created, (await client.PostJson($"/api/conversations/{conversation.Id}/messages",
            new { role = "user", content = "東京で会いましょう" })).StatusCode);

        // Percent-encoded, each of these characters takes 9 bytes: Kestrel's own 8 KiB request line refused both (a bare 414).
        var q = string.Concat(Enumerable.Repeat("東京", 500)); // Search:MaxQueryLength, 1,000 characters
        var search = await client.GetAsync($"/api/search?q={Uri.EscapeDataString(q)}&mode=keyword");
        Assert.Equal(HttpStatusCode.OK, search.StatusCode);
        Assert.Equal(q, (await search.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("query").GetString());

        var query = string.Concat(Enumerable.Repeat("会い", 1000)); // the context's 2,000 characters
        var context = await client.GetAsync($"/api/conversations/{conversation.Id}/context?maxTokens=1000&query={Uri.EscapeDataString(query)}");
        Assert.Equal(HttpStatusCode.OK, context.StatusCode);

        // Past the service's own limit, yet inside the line's: its ProblemDetails names the limit, not the web server's empty 414.
        var tooLong = await client.GetAsync($"/api/search?q={Uri.EscapeDataString(q + q + q)}");
        Assert.Equal(HttpStatusCode.UnprocessableEntity, tooLong.StatusCode);
        Assert.Contains("'q' may be at most 1000 characters", (await tooLong.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("detail").GetString(), StringComparison.Ordinal);

        // Past Limits:MaxRequestLineBytes (64 KiB): the web server's 414, before the service.
        var huge = await client.GetAsync($"/api/search?q={new string('a', 70 * 1024)}");
        Assert.Equal(HttpStatusCode.RequestUriTooLong, huge.StatusCode);
    }
}
