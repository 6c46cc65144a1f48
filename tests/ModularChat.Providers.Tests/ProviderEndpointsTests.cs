using System.Net;
using System.Net.Http.Headers;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Providers.Domain;
using ModularChat.Testing.Fakes;

namespace ModularChat.Providers.Tests;

[Collection(AppCollection.Name)]
public sealed class ProviderEndpointsTests(ProvidersApp app)
{
    [Fact]
    public async Task A_stored_provider_shows_a_masked_hint_and_never_its_key()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        const string key = "sk-proj-abcdefghijklmnop0123wxyz";
        var created = await client.AddProviderAsync(app.Model.BaseUrl, key);
        Assert.True(created.HasApiKey);
        Assert.Equal("sk-...wxyz", created.ApiKeyHint);

        foreach (var url in new[] { "/api/providers", $"/api/providers/{created.Id}" })
        {
            var body = await client.GetStringAsync(url);
            Assert.DoesNotContain(key, body, StringComparison.Ordinal);
            Assert.DoesNotContain("abcdefghijklmnop", body, StringComparison.Ordinal);
            Assert.Contains("sk-...wxyz", body, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_provider_added_changed_or_deleted_through_one_node_is_seen_so_by_another_at_once()
    {
        // Two nodes of one deployment. Node B caches the tenant's providers (for Providers:CacheDuration, 30 s) as it tests one.
        await using var nodeB = await app.StartHostAsync();
        var tenant = ModularChatApp.NewUser("nodes");
        using var throughA = app.Client(tenant);
        using var throughB = nodeB.Server.CreateClient();
        throughB.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(tenant));
        var firstKey = $"sk-nodes-first-{Guid.NewGuid():N}";
        var secondKey = $"sk-nodes-second-{Guid.NewGuid():N}";
        using var first = app.Model.AnswerFor(firstKey, FakeReply.Text("OK"));
        using var second = app.Model.AnswerFor(secondKey, FakeReply.Text("OK"));
        var provider = await throughA.AddProviderAsync(app.Model.BaseUrl, firstKey, name: "first");
        Assert.True((await TestAsync(throughB, provider.Id)).Success);

        // Added through node A: node B finds it.
        var added = await throughA.AddProviderAsync(app.Model.BaseUrl, secondKey, name: "second");
        Assert.True((await TestAsync(throughB, added.Id)).Success);

        // Its key replaced through node A: node B calls the model with the new one.
        var thirdKey = $"sk-nodes-third-{Guid.NewGuid():N}";
        using var third = app.Model.AnswerFor(thirdKey, FakeReply.Text("OK"));
        (await throughA.PutJson($"/api/providers/{provider.Id}", new
        {
            name = "first", kind = "openai-compatible", endpoint = app.Model.BaseUrl.ToString(), chatModel = "fake-model", apiKey = thirdKey,
        })).EnsureSuccessStatusCode();
        Assert.True((await TestAsync(throughB, provider.Id)).Success);
        Assert.Equal((1, 1), (app.Model.RequestsWith(firstKey), app.Model.RequestsWith(thirdKey)));

        // Deleted through node A: gone for node B.
        Assert.Equal(HttpStatusCode.NoContent, (await throughA.DeleteAsync($"/api/providers/{added.Id}")).StatusCode);
        await (await throughB.PostAsync($"/api/providers/{added.Id}/test", null)).ShouldBeProblem(404);
        Assert.Equal(1, app.Model.RequestsWith(secondKey));

        static async Task<ProviderTestDto> TestAsync(HttpClient client, Guid id)
            => await (await client.PostAsync($"/api/providers/{id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);
    }

    [Fact]
    public async Task While_Redis_is_away_a_provider_deleted_through_one_node_is_gone_for_another_once_its_local_only_copy_expires()
    {
        // Two nodes whose Redis (a relay in front of the real one) goes away: each counts its cache generations alone, so
        // node B learns of node A's change only when its copy of the tenant's providers expires.
        await using var proxy = TcpProxy.InFrontOfRedis(app.RedisConnectionString);
        var throughRelay = new Dictionary<string, string?> { ["ConnectionStrings:Redis"] = $"127.0.0.1:{proxy.Port}" };
        await using var nodeA = await app.StartHostAsync(throughRelay);
        await using var nodeB = await app.StartHostAsync(throughRelay);
        var user = ModularChatApp.NewUser("redis-away");
        using var throughA = app.Client(nodeA, user);
        using var throughB = app.Client(nodeB, user);
        var key = $"sk-redis-away-{Guid.NewGuid():N}";
        using var answers = app.Model.AnswerFor(key, FakeReply.Text("OK"));
        proxy.Cut();

        var provider = await throughA.AddProviderAsync(app.Model.BaseUrl, key);
        var test = $"/api/providers/{provider.Id}/test";
        await (await throughB.PostAsync(test, null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK); // node B keeps its copy
        Assert.Equal(HttpStatusCode.NoContent, (await throughA.DeleteAsync($"/api/providers/{provider.Id}")).StatusCode);

        // Gone for node B within Providers:LocalOnlyCacheDuration (2 s); it used to be Providers:CacheDuration (30 s).
        await Eventually.Until(async () => (await throughB.PostAsync(test, null)).StatusCode, status => status == HttpStatusCode.NotFound,
            seconds: 15, what: "Node B still used the provider deleted through node A");
    }

    [Fact]
    public async Task The_first_provider_is_the_default_and_a_new_default_replaces_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var first = await client.AddProviderAsync(app.Model.BaseUrl, name: "first");
        var second = await client.AddProviderAsync(app.Model.BaseUrl, name: "second");
        Assert.True(first.IsDefault);
        Assert.False(second.IsDefault);

        var third = await client.AddProviderAsync(app.Model.BaseUrl, name: "third", isDefault: true);
        var all = await (await client.GetAsync("/api/providers")).ReadAs<List<ProviderDto>>(HttpStatusCode.OK);
        Assert.True(third.IsDefault);
        Assert.Equal(["third"], all.Where(p => p.IsDefault).Select(p => p.Name));

        // Deleting the default hands the role to the oldest remaining provider.
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/providers/{third.Id}")).StatusCode);
        all = await (await client.GetAsync("/api/providers")).ReadAs<List<ProviderDto>>(HttpStatusCode.OK);
        Assert.Equal(["first"], all.Where(p => p.IsDefault).Select(p => p.Name));
    }

    [Fact]
    public async Task Providers_added_at_once_as_the_default_are_all_added_and_the_last_one_applied_is_the_default()
    {
        using var client = app.Client(ModularChatApp.NewUser());

        var responses = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => client.PostJson("/api/providers", new
        {
            name = $"p{i}", kind = "openai-compatible", endpoint = app.Model.BaseUrl.ToString(), chatModel = "m", isDefault = true,
        })));

        // Each one read the others and turned their flag off: all but one used to fail with a 409 about a version nobody sent.
        foreach (var response in responses)
        {
            await response.ReadAs<ProviderDto>(HttpStatusCode.Created);
        }

        var all = await (await client.GetAsync("/api/providers")).ReadAs<List<StoredProviderDto>>(HttpStatusCode.OK);
        Assert.Equal(8, all.Count);
        var only = Assert.Single(all, p => p.IsDefault);
        Assert.Equal(all.Max(p => p.CreatedAt), only.CreatedAt);
    }

    [Fact]
    public async Task Mcp_servers_added_at_once_stop_at_the_tenants_maximum()
    {
        using var client = app.Client(ModularChatApp.NewUser());

        // Mcp:MaxServersPerTenant is 20; each request used to count the others before any of them was stored.
        var responses = await Task.WhenAll(Enumerable.Range(0, 26).Select(i => client.PostJson("/api/mcp-servers", new
        {
            name = $"s{i}", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl,
        })));

        Assert.Equal(20, responses.Count(r => r.StatusCode == HttpStatusCode.Created));
        foreach (var refused in responses.Where(r => r.StatusCode != HttpStatusCode.Created))
        {
            await refused.ShouldBeProblem(422);
        }

        Assert.Equal(20, (await (await client.GetAsync("/api/mcp-servers")).ReadAs<List<McpServerDto>>(HttpStatusCode.OK)).Count);
    }

    private sealed record StoredProviderDto(Guid Id, string Name, bool IsDefault, DateTimeOffset CreatedAt);

    public static TheoryData<string, string> BadProviders => new()
    {
        { """{"kind":"openai-compatible","chatModel":"m"}""", "name" },
        { """{"name":"\u200B","kind":"openai-compatible","chatModel":"m"}""", "name" }, // a zero-width space: no name
        { """{"name":"x","kind":"anthropic","chatModel":"m"}""", "kind" },
        { """{"name":"x","chatModel":"m"}""", "kind" },
        { """{"name":"x","kind":"openai-compatible","endpoint":"not a url","chatModel":"m"}""", "endpoint" },
        { """{"name":"x","kind":"openai-compatible","endpoint":"ftp://example.com/v1","chatModel":"m"}""", "endpoint" },
        { """{"name":"x","kind":"openai-compatible","endpoint":"https://user:pw@example.com/v1","chatModel":"m"}""", "endpoint" },
        { """{"name":"x","kind":"openai-compatible","endpoint":"https://example.com/v1"}""", "chatModel" },
        { """{"name":"x","kind":"azure-openai","endpoint":"https://res.openai.azure.com","chatModel":"gpt"}""", "apiKey" },
        { """{"name":"x","kind":"azure-openai","chatModel":"gpt","apiKey":"k-0123456789"}""", "endpoint" },
        // Values that could never work: a key an HTTP header cannot carry, a model name with a line break, a URL too long to be an API root.
        { """{"name":"x","kind":"openai-compatible","endpoint":"https://example.com/v1","chatModel":"m","apiKey":"sk-ünïcode-kéy-1234"}""", "apiKey" },
        { """{"name":"x","kind":"openai-compatible","endpoint":"https://example.com/v1","chatModel":"o\nk"}""", "chatModel" },
        { """{"name":"x","kind":"openai-compatible","endpoint":"https://example.com/v1","chatModel":"o\u2028k"}""", "chatModel" },
        { """{"name":"x","kind":"openai-compatible","endpoint":"https://example.com/v1","chatModel":"m","summaryModel":"s\u0007"}""", "summaryModel" },
        { $$"""{"name":"x","kind":"openai-compatible","endpoint":"https://example.com/v1/{{new string('a', 100_000)}}","chatModel":"m"}""", "endpoint" },
        // A lone surrogate (\ud800 with no low half) is no text: refused where the body is read, naming the field.
        { """{"name":"x\ud800","kind":"openai-compatible","chatModel":"m"}""", "name" },
        // Credentials in the query string, like those in user:password@.
        { """{"name":"x","kind":"openai-compatible","endpoint":"https://example.com/v1?api_key=zzz","chatModel":"m"}""", "endpoint" },
        { """{"name":"x","kind":"openai-compatible","endpoint":"https://example.com/v1?x=1&access_token=zzz","chatModel":"m"}""", "endpoint" },
    };

    [Fact]
    public async Task A_query_string_without_credentials_is_kept()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var provider = await client.AddProviderAsync(new Uri("https://example.com/v1?api-version=2024-10-21"));
        Assert.Equal("https://example.com/v1?api-version=2024-10-21", provider.Endpoint);
    }

    [Fact]
    public async Task A_chat_model_with_control_characters_answers_400()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = "hi", model = "a\nb" })).ShouldNameField("model");
    }

    [Theory]
    [MemberData(nameof(BadProviders))]
    public async Task Bad_provider_input_answers_400_naming_the_field(string json, string field)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var response = await client.PostAsync("/api/providers", new StringContent(json, System.Text.Encoding.UTF8, "application/json"));
        await response.ShouldNameField(field);
        Assert.Empty(await (await client.GetAsync("/api/providers")).ReadAs<List<ProviderDto>>(HttpStatusCode.OK));
    }

    [Fact]
    public async Task A_duplicate_name_answers_409_whatever_its_case()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, name: "Work");
        var duplicate = await client.PostJson("/api/providers", new { name = "work", kind = "openai-compatible", chatModel = "m" });
        var problem = await duplicate.ShouldBeProblem(409);
        Assert.Contains("work", problem.GetProperty("detail").GetString(), StringComparison.OrdinalIgnoreCase);

        var other = await client.AddProviderAsync(app.Model.BaseUrl, name: "other");
        var renamed = await client.PutJson($"/api/providers/{other.Id}", new { name = "WORK", kind = "openai-compatible", chatModel = "m" });
        await renamed.ShouldBeProblem(409);
    }

    [Theory]
    [InlineData("Caf\u00e9", "Cafe\u0301")] // composed (NFC), then decomposed (NFD): the same letters on screen
    [InlineData("Cafe\u0301", "CAF\u00c9")]
    [InlineData("\uff2f\uff50\uff45\uff4e", "open")] // full-width letters, then ASCII
    [InlineData("\ufb01les", "Files")] // the fi ligature
    [InlineData("Stra\u00dfe", "STRASSE")] // the sharp s folds to ss, as its capital form is written
    [InlineData("Wo\u200brk", "work")] // a zero-width space inside: invisible
    [InlineData("\u03a3\u03bf\u03c6\u03af\u03b1\u03c2", "\u03c3\u03bf\u03c6\u03af\u03b1\u03c3")] // Greek final sigma and capital sigma
    public async Task A_name_written_in_another_unicode_form_answers_409_on_create_and_on_rename(string taken, string sameName)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, name: taken);

        var duplicate = await client.PostJson("/api/providers", new { name = sameName, kind = "openai-compatible", chatModel = "m" });

        var problem = await duplicate.ShouldBeProblem(409);
        Assert.Equal("name", problem.GetProperty("field").GetString());
        Assert.Contains($"'{sameName}'", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var other = await client.AddProviderAsync(app.Model.BaseUrl, name: "other");
        var renamed = await client.PutJson($"/api/providers/{other.Id}", new { name = sameName, kind = "openai-compatible", chatModel = "m" });
        Assert.Equal("name", (await renamed.ShouldBeProblem(409)).GetProperty("field").GetString());
        Assert.Equal([taken, "other"], (await (await client.GetAsync("/api/providers")).ReadAs<List<ProviderDto>>(HttpStatusCode.OK)).Select(p => p.Name));
    }

    [Theory]
    [InlineData("two\nlines")]
    [InlineData("carriage\rreturn")]
    [InlineData("a\ttab")]
    [InlineData("trailing line break\n")] // stored trimmed before, so the name itself was kept: refused all the same
    [InlineData("escape \u001b[31mred")]
    [InlineData("next line \u0085(C1)")]
    [InlineData("delete \u007f")]
    [InlineData("line\u2028separator")] // shown as a line break by some log viewers
    [InlineData("paragraph\u2029separator")]
    public async Task A_provider_or_mcp_server_name_with_control_characters_answers_400_naming_it_on_create_and_on_rename(string name)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, name: "fine");
        var server = await client.AddMcpServerAsync("tools", app.Mcp.StreamableHttpUrl);

        // Names are written into logs: one with a line break could forge a line. Model names were refused so already.
        await (await client.PostJson("/api/providers", new { name, kind = "openai-compatible", chatModel = "m" })).ShouldNameField("name");
        await (await client.PutJson($"/api/providers/{provider.Id}", new { name, kind = "openai-compatible", chatModel = "m" })).ShouldNameField("name");
        await (await client.PostJson("/api/mcp-servers", new { name, transport = "streamable-http", url = app.Mcp.StreamableHttpUrl })).ShouldNameField("name");
        await (await client.PutJson($"/api/mcp-servers/{server.Id}", new { name, transport = "streamable-http", url = app.Mcp.StreamableHttpUrl }))
            .ShouldNameField("name");

        Assert.Equal(["fine"], (await (await client.GetAsync("/api/providers")).ReadAs<List<ProviderDto>>(HttpStatusCode.OK)).Select(p => p.Name));
        Assert.Equal(["tools"], (await (await client.GetAsync("/api/mcp-servers")).ReadAs<List<McpServerDto>>(HttpStatusCode.OK)).Select(s => s.Name));
    }

    [Fact]
    public async Task A_provider_and_an_mcp_server_stored_with_a_line_break_in_their_names_keep_working_until_renamed()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var now = DateTimeOffset.UtcNow;
        // As a build that let such names through stored them.
        var provider = new ProviderSettings
        {
            Id = Guid.CreateVersion7(), TenantId = user, Name = "old\nprovider", NormalizedName = ProviderSettings.Normalize("old\nprovider"),
            Kind = ProviderKinds.OpenAiCompatible, Endpoint = app.Model.BaseUrl.ToString().TrimEnd('/'), ChatModel = "fake-model", IsDefault = true,
            CreatedAt = now, UpdatedAt = now,
        };
        var server = new McpServerConnection
        {
            Id = Guid.CreateVersion7(), TenantId = user, Name = "old\ttools", NormalizedName = ProviderSettings.Normalize("old\ttools"),
            Transport = McpTransports.StreamableHttp, Url = app.Mcp.StreamableHttpUrl, CreatedAt = now,
        };
        await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(user))
        {
            session.Store(provider);
            session.Store(server);
            await session.SaveChangesAsync();
        }

        Assert.Equal(["old\nprovider"], (await (await client.GetAsync("/api/providers")).ReadAs<List<ProviderDto>>(HttpStatusCode.OK)).Select(p => p.Name));
        var conversation = await client.StartConversationAsync();
        var marker = ChatTests.Marker();
        var turn = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} hi", provider = "old\nprovider", toolServers = new[] { "old\ttools" } }))
            .ReadAs<ChatTurnDto>(HttpStatusCode.OK);
        Assert.Equal("old\nprovider", turn.Provider);
        Assert.Contains("add", app.Model.Requests.Last(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).ToolNames);

        // Written again, each needs a name without them.
        await (await client.PutJson($"/api/providers/{provider.Id}", new { name = "old\nprovider", kind = "openai-compatible", chatModel = "m" })).ShouldNameField("name");
        Assert.Equal("old provider", (await (await client.PutJson($"/api/providers/{provider.Id}", new { name = "old provider", kind = "openai-compatible", chatModel = "m" }))
            .ReadAs<ProviderDto>(HttpStatusCode.OK)).Name);
        Assert.Equal("old tools", (await (await client.PutJson($"/api/mcp-servers/{server.Id}", new { name = "old tools", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl }))
            .ReadAs<McpServerDto>(HttpStatusCode.OK)).Name);
    }

    [Fact]
    public async Task A_name_that_grows_past_the_limit_once_normalized_answers_422_not_500()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        // 100 characters as sent, 1,800 in NFKC (U+FDFA is a phrase of 18): ~3.3 kB, more than PostgreSQL's index rows hold.
        var response = await client.PostJson("/api/providers", new { name = new string('\ufdfa', 100), kind = "openai-compatible", chatModel = "m" });

        var problem = await response.ShouldBeProblem(422);
        Assert.True(problem.GetProperty("errors").TryGetProperty("name", out _), problem.ToString());
        response = await client.PostJson("/api/mcp-servers", new { name = new string('\ufdfa', 100), transport = "streamable-http", url = app.Mcp.StreamableHttpUrl });
        problem = await response.ShouldBeProblem(422);
        Assert.True(problem.GetProperty("errors").TryGetProperty("name", out _), problem.ToString());
        Assert.Empty(await (await client.GetAsync("/api/providers")).ReadAs<List<ProviderDto>>(HttpStatusCode.OK));
    }

    [Fact]
    public async Task A_provider_stored_before_names_were_normalized_is_still_a_duplicate_and_its_next_write_stores_the_new_form()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var store = app.Host.Services.GetRequiredService<IDocumentStore>();
        var now = DateTimeOffset.UtcNow;
        var old = new ProviderSettings
        {
            // As a version before this one stored it: NormalizedName was Trim().ToLowerInvariant(), e and U+0301 kept apart.
            Id = Guid.CreateVersion7(), TenantId = user, Name = "Cafe\u0301", NormalizedName = "cafe\u0301", Kind = ProviderKinds.OpenAiCompatible,
            Endpoint = app.Model.BaseUrl.ToString().TrimEnd('/'), ChatModel = "m", IsDefault = true, CreatedAt = now, UpdatedAt = now,
        };
        await using (var session = store.LightweightSession(user))
        {
            session.Store(old);
            await session.SaveChangesAsync();
        }

        await (await client.PostJson("/api/providers", new { name = "Caf\u00e9", kind = "openai-compatible", chatModel = "m" })).ShouldBeProblem(409);
        var other = await client.AddProviderAsync(app.Model.BaseUrl, name: "other");
        await (await client.PutJson($"/api/providers/{other.Id}", new { name = "CAF\u00c9", kind = "openai-compatible", chatModel = "m" })).ShouldBeProblem(409);

        // Written again (its own name kept), it holds the new form, which the database's unique index then sees.
        await (await client.PutJson($"/api/providers/{old.Id}", new { name = "Cafe\u0301", kind = "openai-compatible", chatModel = "m2" }))
            .ReadAs<ProviderDto>(HttpStatusCode.OK);
        await using var read = store.QuerySession(user);
        Assert.Equal("caf\u00e9", (await read.LoadAsync<ProviderSettings>(old.Id))!.NormalizedName);
    }

    [Fact]
    public async Task Another_tenants_provider_answers_404_everywhere()
    {
        using var owner = app.Client(ModularChatApp.NewUser());
        using var stranger = app.Client(ModularChatApp.NewUser());
        var provider = await owner.AddProviderAsync(app.Model.BaseUrl);

        await (await stranger.GetAsync($"/api/providers/{provider.Id}")).ShouldBeProblem(404);
        await (await stranger.PutJson($"/api/providers/{provider.Id}", new { name = "mine", kind = "openai-compatible", chatModel = "m" })).ShouldBeProblem(404);
        await (await stranger.PostAsync($"/api/providers/{provider.Id}/test", null)).ShouldBeProblem(404);
        await (await stranger.DeleteAsync($"/api/providers/{provider.Id}")).ShouldBeProblem(404);
        Assert.Empty(await (await stranger.GetAsync("/api/providers")).ReadAs<List<ProviderDto>>(HttpStatusCode.OK));
        await (await owner.GetAsync($"/api/providers/{provider.Id}")).ReadAs<ProviderDto>(HttpStatusCode.OK);
    }

    [Fact]
    public async Task Testing_a_provider_reports_success_latency_and_the_answer()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var key = $"sk-test-answer-{Guid.NewGuid():N}";
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, key);
        using var _ = app.Model.AnswerFor(key, FakeReply.Text("OK"));

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        Assert.True(result.Success, result.Error?.Message);
        Assert.Equal("OK", result.Answer);
        Assert.Equal("fake-model", result.Model);
        Assert.True(result.LatencyMs > 0);
        Assert.Null(result.Error);
        Assert.Equal(1, app.Model.RequestsWith(key));
    }

    [Fact]
    public async Task Testing_a_provider_leaves_control_characters_out_of_the_answer_but_keeps_tabs_and_line_breaks()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var key = $"sk-test-control-{Guid.NewGuid():N}";
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, key);
        using var _ = app.Model.AnswerFor(key, FakeReply.Text("O\0K\u0001 \u001b[1mbold\tcell\r\nnext\u007f"));

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        // The NUL, SOH and ESC came back as they were: a client that shows the sample showed them too.
        Assert.True(result.Success, result.Error?.Message);
        Assert.Equal("OK [1mbold\tcell\r\nnext\u007f", result.Answer);
    }

    [Fact]
    public async Task Testing_a_provider_with_a_wrong_key_reports_the_401_instead_of_failing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var key = $"sk-wrong-key-{Guid.NewGuid():N}";
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, key);
        using var _ = app.Model.AnswerFor(key, FakeReply.Error(401, $"Incorrect API key provided: {key}."));

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Equal(401, result.Error!.ProviderStatus);
        Assert.Contains("401", result.Error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(key, result.Error.Message, StringComparison.Ordinal);
        Assert.Equal(1, app.Model.RequestsWith(key));
    }

    [Fact]
    public async Task A_key_that_a_long_provider_error_repeats_where_it_is_cut_short_is_not_shown_in_part()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var key = $"wk-{Guid.NewGuid():N}{Guid.NewGuid():N}"[..38];
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, key);
        // The provider's words are cut at 500 characters: here inside the key.
        using var _ = app.Model.AnswerFor(key, FakeReply.Error(401, new string('x', 490) + key + " was refused"));

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.DoesNotContain(key[..8], result.Error!.Message, StringComparison.Ordinal);
        Assert.Equal(1, app.Model.RequestsWith(key));
    }

    [Fact]
    public async Task Testing_a_provider_that_cannot_be_reached_reports_why()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var provider = await client.AddProviderAsync(new Uri(SilentServer.RefusedUrl().Replace("/mcp", "/v1", StringComparison.Ordinal)));

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Null(result.Error!.ProviderStatus);
        Assert.Contains("refused", result.Error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("<html><body>Sign in to the gateway</body></html>", "not JSON")]
    [InlineData("""{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"fake-model","choices":[]}""", "without choices")]
    // A top-level "error" that is null is no error, and the JSON is no chat completion either.
    [InlineData("""{"error":null}""", "without choices")]
    public async Task Testing_a_provider_that_answers_something_else_than_the_protocol_says_so(string body, string why)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var key = $"sk-test-raw-{Guid.NewGuid():N}";
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, key);
        using var _ = app.Model.AnswerFor(key, new FakeReply(RawBody: body));

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        // It used to say the provider "could not be reached", with the JSON reader's or a list index's complaint.
        Assert.False(result.Success);
        Assert.Null(result.Error!.ProviderStatus);
        Assert.Contains("answered with something that is not an OpenAI-compatible response", result.Error.Message, StringComparison.Ordinal);
        Assert.Contains(why, result.Error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task With_a_settings_role_only_callers_with_it_change_or_test_providers_and_MCP_servers_and_the_others_still_read_them()
    {
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Auth:SettingsRole"] = "admin" });
        var tenant = ModularChatApp.NewUser("settings-role");
        HttpClient Caller(params string[] roles)
        {
            var client = node.Server.CreateClient();
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser(), tenant, roles));
            return client;
        }

        using var admin = Caller("admin");
        using var member = Caller();
        var provider = await admin.AddProviderAsync(app.Model.BaseUrl);
        var server = await (await admin.PostJson("/api/mcp-servers", new { name = "calc", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl }))
            .ReadAs<McpServerDto>(HttpStatusCode.Created);

        // Without the role: every change and test answers 403 naming it, and nothing changes.
        var refused = new[]
        {
            await member.PostJson("/api/providers", new { name = "other", kind = "openai-compatible", endpoint = app.Model.BaseUrl.ToString(), chatModel = "m", apiKey = "sk-member-1234567890" }),
            await member.PutJson($"/api/providers/{provider.Id}", new { name = "renamed", kind = "openai-compatible", endpoint = app.Model.BaseUrl.ToString(), chatModel = "m" }),
            await member.PostAsync($"/api/providers/{provider.Id}/test", null),
            await member.DeleteAsync($"/api/providers/{provider.Id}"),
            await member.PostJson("/api/mcp-servers", new { name = "mine", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl }),
            await member.PutJson($"/api/mcp-servers/{server.Id}", new { name = "calc", transport = "streamable-http", url = app.Mcp.StreamableHttpUrl + "?x=1" }),
            await member.PostAsync($"/api/mcp-servers/{server.Id}/test", null),
            await member.DeleteAsync($"/api/mcp-servers/{server.Id}"),
        };
        foreach (var response in refused)
        {
            var problem = await response.ShouldBeProblem(403);
            Assert.Contains("'admin'", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        // Reading needs no role, and what is read is as the admin left it.
        var providers = await (await member.GetAsync("/api/providers")).ReadAs<List<ProviderDto>>(HttpStatusCode.OK);
        Assert.Equal([(provider.Id, provider.Name)], providers.Select(p => (p.Id, p.Name)));
        var servers = await (await member.GetAsync("/api/mcp-servers")).ReadAs<List<McpServerDto>>(HttpStatusCode.OK);
        Assert.Equal([(server.Id, "calc")], servers.Select(s => (s.Id, s.Name)));
        Assert.Equal(HttpStatusCode.OK, (await admin.PostAsync($"/api/providers/{provider.Id}/test", null)).StatusCode);
    }

    [Fact]
    public async Task Testing_a_provider_that_answers_an_error_with_status_200_reports_its_words()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var key = $"sk-test-gateway-{Guid.NewGuid():N}";
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, key);
        using var _ = app.Model.AnswerFor(key, new FakeReply(RawBody:
            $$$"""{"error":{"message":"No endpoints found for fake-model (key {{{key}}})","type":"not_found"}}"""));

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        // It used to say "a chat completion without choices or with fields missing".
        Assert.False(result.Success);
        Assert.Contains("reported an error instead of an answer (not_found): No endpoints found for fake-model", result.Error!.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(key[..8], result.Error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(ChatTests.UnreadableCompletions), MemberType = typeof(ChatTests))]
    public async Task Testing_a_provider_whose_answer_cannot_be_read_says_so_and_not_that_it_could_not_be_reached(string body, string why)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var key = $"sk-test-unreadable-{Guid.NewGuid():N}";
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, key);
        using var _ = app.Model.AnswerFor(key, new FakeReply(RawBody: body));

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Null(result.Error!.ProviderStatus);
        Assert.Contains("answered with something that could not be read", result.Error.Message, StringComparison.Ordinal);
        Assert.Contains(why, result.Error.Message, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("could not be reached", result.Error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Testing_a_provider_that_reports_a_negative_token_count_reports_no_count()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var key = $"sk-test-negative-{Guid.NewGuid():N}";
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, key);
        using var _ = app.Model.AnswerFor(key, new FakeReply("pong", PromptTokens: 5, CompletionTokens: -3));

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        Assert.True(result.Success);
        Assert.Equal((5L, (long?)null), (result.InputTokens!.Value, result.OutputTokens));
    }

    [Fact]
    public async Task Updating_without_an_api_key_keeps_the_stored_key_and_an_empty_one_removes_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, "sk-keep-me-0123456789");
        var updated = await (await client.PutJson($"/api/providers/{provider.Id}", new
        {
            name = "renamed", kind = "openai-compatible", endpoint = app.Model.BaseUrl.ToString(), chatModel = "other-model",
        })).ReadAs<ProviderDto>(HttpStatusCode.OK);
        Assert.Equal("renamed", updated.Name);
        Assert.Equal("other-model", updated.ChatModel);
        Assert.True(updated.HasApiKey);
        Assert.Equal(provider.ApiKeyHint, updated.ApiKeyHint);

        // The change is seen at once (the in-process cache is dropped on change): the test call uses the new model and the kept key.
        await client.PostAsync($"/api/providers/{provider.Id}/test", null);
        Assert.Contains(app.Model.Requests, r => r.Authorization == "Bearer sk-keep-me-0123456789" && r.Body["model"]?.ToString() == "other-model");

        var removed = await (await client.PutJson($"/api/providers/{provider.Id}", new
        {
            name = "renamed", kind = "openai-compatible", endpoint = app.Model.BaseUrl.ToString(), chatModel = "other-model", apiKey = "",
        })).ReadAs<ProviderDto>(HttpStatusCode.OK);
        Assert.False(removed.HasApiKey);
        Assert.Null(removed.ApiKeyHint);
    }

    [Fact]
    public async Task A_stored_key_is_kept_for_the_same_server_only()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var provider = await client.AddProviderAsync(app.Model.BaseUrl, "sk-stay-home-0123456789");
        object Settings(string endpoint, string? apiKey = null)
            => apiKey is null
                ? new { name = "p", kind = "openai-compatible", endpoint, chatModel = "m" }
                : new { name = "p", kind = "openai-compatible", endpoint, chatModel = "m", apiKey };

        // Pointed at another server without the key: refused, so that nobody reads a key by redirecting its owner's settings.
        var elsewhere = $"http://127.0.0.2:{app.Model.BaseUrl.Port}/v1";
        await (await client.PutJson($"/api/providers/{provider.Id}", Settings(elsewhere))).ShouldNameField("apiKey");
        var unchanged = await (await client.GetAsync($"/api/providers/{provider.Id}")).ReadAs<ProviderDto>(HttpStatusCode.OK);
        Assert.Equal((app.Model.BaseUrl.ToString().TrimEnd('/'), "...6789"), (unchanged.Endpoint, unchanged.ApiKeyHint));

        // Another path on the same server (scheme, host and port) keeps it; so does the host written in capitals.
        var samePlace = new Uri(app.Model.BaseUrl, "/openai/v1").ToString();
        Assert.True((await (await client.PutJson($"/api/providers/{provider.Id}", Settings(samePlace))).ReadAs<ProviderDto>(HttpStatusCode.OK)).HasApiKey);
        var capitals = app.Model.BaseUrl.ToString().Replace("http://", "HTTP://", StringComparison.Ordinal);
        Assert.True((await (await client.PutJson($"/api/providers/{provider.Id}", Settings(capitals))).ReadAs<ProviderDto>(HttpStatusCode.OK)).HasApiKey);

        // With the key sent again, or removed, it may move.
        var moved = await (await client.PutJson($"/api/providers/{provider.Id}", Settings(elsewhere, "sk-for-there-0123456789"))).ReadAs<ProviderDto>(HttpStatusCode.OK);
        Assert.Equal((elsewhere, "...6789"), (moved.Endpoint, moved.ApiKeyHint));
        var keyless = await (await client.PutJson($"/api/providers/{provider.Id}", Settings(app.Model.BaseUrl.ToString(), ""))).ReadAs<ProviderDto>(HttpStatusCode.OK);
        Assert.False(keyless.HasApiKey);
        Assert.True((await client.PutJson($"/api/providers/{provider.Id}", Settings(elsewhere))).IsSuccessStatusCode); // no key to keep
    }

    [Fact]
    public async Task An_azure_openai_provider_calls_the_v1_api_with_the_key_in_the_api_key_header()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var root = new Uri(app.Model.BaseUrl.GetLeftPart(UriPartial.Authority));
        var provider = await client.AddProviderAsync(root, "azure-key-0123456789abcdef", kind: "azure-openai", chatModel: "my-deployment");

        var result = await (await client.PostAsync($"/api/providers/{provider.Id}/test", null)).ReadAs<ProviderTestDto>(HttpStatusCode.OK);

        Assert.True(result.Success, result.Error?.Message);
        var request = app.Model.Requests.Last(r => r.Body["model"]?.ToString() == "my-deployment");
        Assert.Equal("/openai/v1/chat/completions", request.Path);
        Assert.Equal("azure-key-0123456789abcdef", request.ApiKeyHeader);
        Assert.Null(request.Authorization);
    }
}

/// <summary>The framework's binding errors answer in the client's terms on this module's endpoints too.</summary>
[Collection(AppCollection.Name)]
public sealed class ProviderBindingErrorTests(ProvidersApp app)
{
    [Theory]
    [InlineData("/api/providers/not-a-guid/test")]
    [InlineData("/api/mcp-servers/not-a-guid/test")]
    public async Task An_id_that_is_not_a_UUID_answers_400_naming_it(string url)
    {
        using var client = app.Client(ModularChatApp.NewUser());

        var problem = await (await client.PostAsync(url, null)).ShouldBeProblem(400);

        Assert.Equal("'not-a-guid' is not a valid value for 'id': expected a UUID.", problem.GetProperty("detail").GetString());
    }

    [Theory]
    [InlineData("/api/providers")]
    [InlineData("/api/mcp-servers")]
    public async Task A_null_body_answers_400_saying_the_body_is_required(string url)
    {
        using var client = app.Client(ModularChatApp.NewUser());

        var problem = await (await client.PostRaw(url, "null")).ShouldBeProblem(400);

        Assert.Equal("The request body is required (a JSON object).", problem.GetProperty("detail").GetString());
    }
}
