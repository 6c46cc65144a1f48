using System.Net;
using Alba;

namespace ModularChat.Conversations.Tests;

[Collection(AppCollection.Name)]
public sealed class ConversationEndpointsTests(ConversationsApp app)
{
    [Fact]
    public async Task Starting_a_conversation_answers_201_with_its_id_and_location()
    {
        var user = ModularChatApp.NewUser();
        var result = await app.Host.Scenario(s =>
        {
            s.WithRequestHeader("Authorization", $"Bearer {app.Token(user)}");
            s.Post.Json(new { title = "Trip planning", metadata = new Dictionary<string, string> { ["app"] = "web" } }).ToUrl("/api/conversations");
            s.StatusCodeShouldBe(HttpStatusCode.Created);
        });

        var created = await result.ReadAsJsonAsync<ConversationDto>();
        Assert.NotEqual(Guid.Empty, created!.Id);
        Assert.Equal("Trip planning", created.Title);
        Assert.Equal("web", created.Metadata["app"]);
        Assert.Equal(0, created.MessageCount);
        Assert.Equal($"/api/conversations/{created.Id}", result.Context.Response.Headers.Location.ToString());

        var get = await app.Host.Scenario(s =>
        {
            s.WithRequestHeader("Authorization", $"Bearer {app.Token(user)}");
            s.Get.Url($"/api/conversations/{created.Id}");
            s.StatusCodeShouldBeOk();
        });
        var fetched = await get.ReadAsJsonAsync<ConversationDto>();
        Assert.Equal((created.Id, created.Title, created.Version), (fetched!.Id, fetched.Title, fetched.Version));
    }

    [Fact]
    public async Task Listing_conversations_pages_by_newest_activity_with_message_counts()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var ids = new List<Guid>();
        for (var i = 0; i < 5; i++)
        {
            var c = await (await client.PostJson("/api/conversations", new { title = $"c{i}" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
            ids.Add(c.Id);
        }

        // Activity on the oldest conversation moves it to the top.
        await client.PostJson($"/api/conversations/{ids[0]}/messages", new { role = "user", content = "bump" });
        await client.PostJson($"/api/conversations/{ids[0]}/messages", new { role = "assistant", content = "bumped" });

        var seen = new List<ConversationDto>();
        string? cursor = null;
        var pages = 0;
        do
        {
            var url = "/api/conversations?limit=2" + (cursor is null ? "" : $"&cursor={cursor}");
            var page = await (await client.GetAsync(url)).ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
            Assert.True(page.Items.Count <= 2);
            seen.AddRange(page.Items);
            cursor = page.NextCursor;
            pages++;
        }
        while (cursor is not null && pages < 10);

        Assert.Equal(3, pages);
        Assert.Equal(5, seen.Count);
        Assert.Equal(ids[0], seen[0].Id);
        Assert.Equal(2, seen[0].MessageCount);
        Assert.Equal(new[] { ids[4], ids[3], ids[2], ids[1] }, seen.Skip(1).Select(c => c.Id));
        Assert.Equal(seen.Select(c => c.LastActivityAt).OrderByDescending(t => t), seen.Select(c => c.LastActivityAt));
    }

    [Fact]
    public async Task Listing_filtered_by_metadata_keeps_the_conversations_that_have_every_pair_and_pages_through_them()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        async Task<Guid> Start(string title, Dictionary<string, string> metadata)
            => (await (await client.PostJson("/api/conversations", new { title, metadata })).ReadAs<ConversationDto>(HttpStatusCode.Created)).Id;

        var aliceWeb1 = await Start("a1", new() { ["userId"] = "alice", ["channel"] = "web" });
        var bob = await Start("b", new() { ["userId"] = "bob", ["channel"] = "web" });
        var aliceMobile = await Start("a2", new() { ["userId"] = "alice", ["channel"] = "mobile" });
        var aliceWeb2 = await Start("a3", new() { ["userId"] = "alice", ["channel"] = "web", ["ref"] = "a=b" });
        await Start("none", []);
        // A metadata change moves a conversation into the filter, or out of it.
        (await client.PatchJson($"/api/conversations/{aliceMobile}", new { metadata = new Dictionary<string, string?> { ["channel"] = "web" } })).EnsureSuccessStatusCode();
        (await client.PatchJson($"/api/conversations/{aliceWeb1}", new { metadata = new Dictionary<string, string?> { ["userId"] = null } })).EnsureSuccessStatusCode();

        async Task<List<Guid>> List(string query)
        {
            var ids = new List<Guid>();
            string? cursor = null;
            do
            {
                var page = await (await client.GetAsync($"/api/conversations?limit=1&{query}" + (cursor is null ? "" : $"&cursor={cursor}")))
                    .ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
                ids.AddRange(page.Items.Select(c => c.Id));
                cursor = page.NextCursor;
            }
            while (cursor is not null && ids.Count < 10);
            return ids;
        }

        // Newest activity first, a page at a time (a metadata change is not activity: the order is by start or last message).
        Assert.Equal([aliceWeb2, aliceMobile], await List("metadata=userId=alice&metadata=channel=web"));
        Assert.Equal([aliceWeb2, aliceMobile], await List("metadata=userId=alice"));
        Assert.Equal([aliceWeb2], await List("metadata=ref=a%3Db")); // split at the first '=': the value may hold more
        Assert.Equal([bob], await List("metadata=userId=bob&metadata=userId=bob"));
        Assert.Empty(await List("metadata=userId=alice&metadata=userId=bob")); // one key cannot hold two values
        Assert.Empty(await List("metadata=userId=ALICE")); // exact
        Assert.Empty(await List("metadata=userId="));
        // Another tenant's conversations with the same metadata are not listed.
        using var other = app.Client(ModularChatApp.NewUser());
        var page = await (await other.GetAsync("/api/conversations?metadata=userId=alice")).ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
        Assert.Empty(page.Items);
    }

    [Fact]
    public async Task A_cursor_continues_only_the_list_it_was_issued_for()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        foreach (var title in new[] { "c1", "c2", "c3" })
        {
            (await client.PostJson("/api/conversations", new { title, metadata = new Dictionary<string, string> { ["userId"] = "alice", ["channel"] = "web" } }))
                .EnsureSuccessStatusCode();
        }

        var first = await (await client.GetAsync("/api/conversations?limit=1&metadata=userId=alice&metadata=channel=web")).ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
        Assert.NotNull(first.NextCursor);
        // The same filters in another order, or repeated, are the same list: the walk goes on.
        var second = await (await client.GetAsync($"/api/conversations?limit=1&metadata=channel=web&metadata=userId=alice&metadata=channel=web&cursor={first.NextCursor}"))
            .ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
        Assert.Equal("c2", Assert.Single(second.Items).Title);
        // Other filters, or none, are another list: its keyset walk would start in the middle of it.
        foreach (var filters in new[] { "metadata=userId=alice", "metadata=userId=alice&metadata=channel=mobile", "" })
        {
            var problem = await (await client.GetAsync($"/api/conversations?limit=1&{filters}&cursor={first.NextCursor}")).ShouldBeProblem(400);
            Assert.Contains("issued for another list", problem.GetProperty("errors").GetProperty("cursor")[0].GetString(), StringComparison.Ordinal);
        }

        var one = await client.NewConversation("one");
        var two = await client.NewConversation("two");
        foreach (var id in new[] { one.Id, two.Id })
        {
            (await client.PostJson($"/api/conversations/{id}/messages/batch",
                new { messages = Enumerable.Range(1, 3).Select(i => new { role = "user", content = $"m{i}" }) })).EnsureSuccessStatusCode();
        }

        var page = await (await client.GetAsync($"/api/conversations/{one.Id}/messages?limit=1")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        var next = await (await client.GetAsync($"/api/conversations/{one.Id}/messages?limit=1&includeArchived=false&cursor={page.NextCursor}"))
            .ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal(2, Assert.Single(next.Items).Sequence);
        // Another conversation's cursor, or the same one with archived messages asked for, is a 400 naming it.
        foreach (var url in new[] { $"/api/conversations/{two.Id}/messages?limit=1", $"/api/conversations/{one.Id}/messages?limit=1&includeArchived=true" })
        {
            var problem = await (await client.GetAsync($"{url}&cursor={page.NextCursor}")).ShouldBeProblem(400);
            Assert.Contains("issued for another list", problem.GetProperty("errors").GetProperty("cursor")[0].GetString(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Bad_metadata_filters_answer_400_or_422_naming_the_problem()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var problem = await (await client.GetAsync("/api/conversations?metadata=userId")).ShouldBeProblem(400);
        Assert.Contains("key=value", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        problem = await (await client.GetAsync("/api/conversations?metadata==alice")).ShouldBeProblem(400);
        Assert.Contains("key=value", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        problem = await (await client.GetAsync("/api/conversations?metadata=userId=a%00b")).ShouldBeProblem(400);
        Assert.Contains("NUL", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var many = string.Join('&', Enumerable.Range(0, 33).Select(i => $"metadata=k{i}=v"));
        problem = await (await client.GetAsync($"/api/conversations?{many}")).ShouldBeProblem(422);
        Assert.Contains("Conversations:MaxMetadataEntries", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Renaming_changes_the_title_and_the_version()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "old" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        var renamed = await (await client.PatchJson($"/api/conversations/{c.Id}", new { title = "new" })).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal("new", renamed.Title);
        Assert.Equal(c.Version + 1, renamed.Version);

        var fetched = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal("new", fetched.Title);
        Assert.Equal(renamed.Version, fetched.Version);
    }

    [Fact]
    public async Task Renaming_with_a_stale_expected_version_answers_409_and_changes_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "old" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "moves the version" });

        var problem = await (await client.PatchJson($"/api/conversations/{c.Id}", new { title = "new", expectedVersion = c.Version }))
            .ShouldBeProblem(409);
        Assert.Equal(c.Version + 1, problem.GetProperty("currentVersion").GetInt64());
        var fetched = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal("old", fetched.Title);
    }

    [Fact]
    public async Task Patching_metadata_merges_it_and_a_null_removes_a_key()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new
        {
            title = "meta",
            metadata = new Dictionary<string, string> { ["app"] = "web", ["lang"] = "en" },
        })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        var patched = await (await client.PatchJson($"/api/conversations/{c.Id}", new
        {
            metadata = new Dictionary<string, string?> { ["lang"] = "fr", ["theme"] = "dark", ["app"] = null },
        })).ReadAs<ConversationDto>(HttpStatusCode.OK);

        var expected = new Dictionary<string, string> { ["lang"] = "fr", ["theme"] = "dark" };
        Assert.Equal(expected, patched.Metadata);
        Assert.Equal("meta", patched.Title);
        Assert.Equal(c.Version + 1, patched.Version);
        var fetched = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(expected, fetched.Metadata);
        Assert.Equal(patched.Version, fetched.Version);
        var listed = await (await client.GetAsync("/api/conversations")).ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
        Assert.Equal(expected, Assert.Single(listed.Items, x => x.Id == c.Id).Metadata);
    }

    [Fact]
    public async Task Patching_title_and_metadata_together_counts_two_changes_and_a_repeat_changes_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "old" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var change = new { title = "new", metadata = new { app = "web" } };

        var first = await (await client.PatchJson($"/api/conversations/{c.Id}", change)).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(("new", "web", c.Version + 2), (first.Title, first.Metadata["app"], first.Version));

        // The same change again (a client's retry) appends nothing: the version stays, so the client's next expectedVersion holds.
        var repeat = await (await client.PatchJson($"/api/conversations/{c.Id}", change)).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(first.Version, repeat.Version);
        var fetched = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(("new", first.Version), (fetched.Title, fetched.Version));
        await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "hi", expectedVersion = first.Version }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
    }

    [Fact]
    public async Task Invalid_patches_answer_400_or_422_and_change_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var full = Enumerable.Range(0, 32).ToDictionary(i => $"k{i}", i => "v");
        var c = await (await client.PostJson("/api/conversations", new { title = "kept", metadata = full })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var url = $"/api/conversations/{c.Id}";

        var empty = await (await client.PatchJson(url, new { })).ShouldBeProblem(400);
        Assert.Contains("'title', 'metadata'", empty.GetProperty("errors").GetProperty("body")[0].GetString());
        await (await client.PatchJson(url, new { title = "  " })).ShouldBeProblem(400);
        await (await client.PatchJson(url, new { metadata = new Dictionary<string, string> { [""] = "x" } })).ShouldBeProblem(400);
        await (await client.PatchJson(url, new { metadata = new Dictionary<string, string> { [new string('k', 65)] = "x" } })).ShouldBeProblem(422);

        // 32 entries is the default maximum: one more, even with a removal of a key that is not there, is too many.
        var tooMany = await (await client.PatchJson(url, new { title = "changed", metadata = new Dictionary<string, string?> { ["k32"] = "v", ["absent"] = null } }))
            .ShouldBeProblem(422);
        Assert.Contains("33", tooMany.GetProperty("errors").GetProperty("metadata")[0].GetString());
        // Swapping one key for another keeps the count.
        var swapped = await (await client.PatchJson(url, new { metadata = new Dictionary<string, string?> { ["k32"] = "v", ["k0"] = null } }))
            .ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(32, swapped.Metadata.Count);

        var fetched = await (await client.GetAsync(url)).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(("kept", c.Version + 1), (fetched.Title, fetched.Version));
        Assert.False(fetched.Metadata.ContainsKey("k0"));
    }

    [Fact]
    public async Task Deleting_a_conversation_makes_it_and_its_messages_disappear()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "to delete" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "hello" });

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{c.Id}")).StatusCode);

        await (await client.GetAsync($"/api/conversations/{c.Id}")).ShouldBeProblem(404);
        await (await client.GetAsync($"/api/conversations/{c.Id}/messages")).ShouldBeProblem(404);
        await (await client.GetAsync($"/api/conversations/{c.Id}/messages/1")).ShouldBeProblem(404);
        await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "again" })).ShouldBeProblem(404);
        await (await client.DeleteAsync($"/api/conversations/{c.Id}")).ShouldBeProblem(404);
        var list = await (await client.GetAsync("/api/conversations")).ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
        Assert.DoesNotContain(list.Items, x => x.Id == c.Id);
    }

    [Fact]
    public async Task Messages_page_forward_and_backward_by_sequence()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "paging" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var batch = Enumerable.Range(1, 7).Select(i => new { role = i % 2 == 1 ? "user" : "assistant", content = $"message {i}" }).ToList();
        await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = batch })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);

        var forward = await ReadAll(client, $"/api/conversations/{c.Id}/messages?limit=3");
        Assert.Equal(Enumerable.Range(1, 7).Select(i => (long)i), forward.Select(m => m.Sequence));
        Assert.Equal("message 1", forward[0].Content);
        Assert.Equal("assistant", forward[1].Role);

        var backward = await ReadAll(client, $"/api/conversations/{c.Id}/messages?limit=3&direction=backward");
        Assert.Equal(Enumerable.Range(1, 7).Reverse().Select(i => (long)i), backward.Select(m => m.Sequence));

        var one = await (await client.GetAsync($"/api/conversations/{c.Id}/messages/4")).ReadAs<MessageDto>(HttpStatusCode.OK);
        Assert.Equal("message 4", one.Content);
    }

    [Fact]
    public async Task Every_message_carries_its_o200k_token_count()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "tokens" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        // "Hello, world!" is 4 tokens in o200k_base: "Hello", ",", " world", "!".
        var appended = await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "Hello, world!" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        Assert.Equal(4, appended.TokenCount);

        var messages = await (await client.GetAsync($"/api/conversations/{c.Id}/messages")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal(4, messages.Items.Single().TokenCount);
        var conversation = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(4, conversation.TotalTokens);
    }

    [Fact]
    public async Task The_openapi_document_and_the_api_page_are_served_without_a_token()
    {
        using var anonymous = app.Host.Server.CreateClient();
        var doc = await anonymous.GetStringAsync("/openapi/v1.json");
        Assert.Contains("/api/conversations/{id}/messages/batch", doc, StringComparison.Ordinal);
        Assert.Contains("bearer", doc, StringComparison.OrdinalIgnoreCase);
        // Nullable strings are typed (the generator left them as empty schemas, "anything").
        var schemas = System.Text.Json.Nodes.JsonNode.Parse(doc)!["components"]!["schemas"]!;
        foreach (var property in new[] { "role", "content", "externalId" })
        {
            Assert.Equal("""["null","string"]""", schemas["AppendMessageRequest"]!["properties"]![property]!["type"]?.ToJsonString());
        }

        // So are lists of strings (they came out as arrays of anything), wherever they are.
        var untyped = Descendants(System.Text.Json.Nodes.JsonNode.Parse(doc)!)
            .Where(n => n is System.Text.Json.Nodes.JsonObject o && o["type"]?.ToJsonString() is { } t && t.Contains("array", StringComparison.Ordinal) && o["items"] is null)
            .Select(n => n!.GetPath()).ToList();
        Assert.Empty(untyped);
        var anything = Descendants(System.Text.Json.Nodes.JsonNode.Parse(doc)!["paths"])
            .Where(n => n is System.Text.Json.Nodes.JsonObject { Count: 0 } && n.Parent is System.Text.Json.Nodes.JsonObject parent && parent["in"] is not null)
            .Select(n => n!.GetPath()).ToList();
        Assert.Empty(anything); // query parameters such as cursor, q and direction are strings

        // The answers every authenticated endpoint can give are declared on each; 403 where a role is needed.
        var operations = System.Text.Json.Nodes.JsonNode.Parse(doc)!["paths"]!.AsObject()
            .Where(p => p.Key.StartsWith("/api/", StringComparison.Ordinal))
            .SelectMany(p => p.Value!.AsObject().Where(o => o.Value?["responses"] is not null)
                .Select(o => (Name: $"{o.Key} {p.Key}", Responses: o.Value!["responses"]!.AsObject().Select(r => r.Key).ToHashSet())))
            .ToList();
        Assert.NotEmpty(operations);
        Assert.All(operations, o => Assert.True(o.Responses.IsSupersetOf(["401", "503"]), $"{o.Name}: {string.Join(", ", o.Responses)}"));
        Assert.All(operations.Where(o => o.Name.Contains(" /api/admin/", StringComparison.Ordinal)), o => Assert.Contains("403", o.Responses));
        Assert.DoesNotContain("403", operations.Single(o => o.Name == "post /api/conversations").Responses);

        var page = await anonymous.GetAsync("/scalar/");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task An_operator_can_turn_the_openapi_document_and_the_api_page_off()
    {
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["OpenApi:Enabled"] = "false" });
        // Like any path the service does not serve: 401 without a token, 404 with one.
        using var anonymous = node.Server.CreateClient();
        var user = ModularChatApp.NewUser();
        using var authenticated = node.Server.CreateClient();
        authenticated.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", app.Token(user));
        foreach (var path in new[] { "/openapi/v1.json", "/scalar/", "/" })
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync(path)).StatusCode);
            var response = await authenticated.GetAsync(path);
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }

        // The API itself is served as before.
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/live")).StatusCode);
        await node.Scenario(s =>
        {
            s.WithRequestHeader("Authorization", $"Bearer {app.Token(user)}");
            s.Post.Json(new { title = "Documented elsewhere" }).ToUrl("/api/conversations");
            s.StatusCodeShouldBe(HttpStatusCode.Created);
        });

        var refused = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { ["OpenApi:Enabled"] = "sometimes" }));
        Assert.Contains("Configuration 'OpenApi:Enabled' must be true or false (was 'sometimes').", refused.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_setting_refused_with_FluentValidations_own_message_reads_as_one_sentence()
    {
        var refused = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { ["Conversations:DefaultPageSize"] = "0" }));

        // FluentValidation's message ends in a period, and the refusal adds its own after the value.
        Assert.Contains("Configuration 'Conversations:DefaultPageSize': 'Default Page Size' must be greater than '0' (was '0').", refused.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(". (was", refused.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Health_endpoints_answer_without_a_token_and_report_postgres_and_redis()
    {
        using var anonymous = app.Host.Server.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/live")).StatusCode);
        var ready = await anonymous.GetStringAsync("/health/ready");
        using var json = System.Text.Json.JsonDocument.Parse(ready);
        Assert.Equal("Healthy", json.RootElement.GetProperty("checks").GetProperty("postgresql").GetProperty("status").GetString());
        Assert.Equal("Healthy", json.RootElement.GetProperty("checks").GetProperty("redis").GetProperty("status").GetString());
    }

    [Theory]
    [InlineData("POST", "/health/live")]
    [InlineData("DELETE", "/health/live")]
    [InlineData("PUT", "/health/ready")]
    public async Task Health_endpoints_answer_only_get_and_head(string method, string path)
    {
        using var anonymous = app.Host.Server.CreateClient();
        using var client = app.Client(ModularChatApp.NewUser());
        Assert.Equal(HttpStatusCode.OK, (await anonymous.SendAsync(new HttpRequestMessage(HttpMethod.Head, path))).StatusCode);

        var response = await client.SendAsync(new HttpRequestMessage(new HttpMethod(method), path));

        // Another method is no health request: 405 naming the methods, or, without a token, 401 as for any other path.
        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal(["GET", "HEAD"], response.Content.Headers.Allow.Order(StringComparer.Ordinal));
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.SendAsync(new HttpRequestMessage(new HttpMethod(method), path))).StatusCode);
    }

    private static IEnumerable<System.Text.Json.Nodes.JsonNode?> Descendants(System.Text.Json.Nodes.JsonNode? node) => node switch
    {
        System.Text.Json.Nodes.JsonObject o => o.Select(p => p.Value).SelectMany(Descendants).Prepend(node),
        System.Text.Json.Nodes.JsonArray a => a.SelectMany(Descendants).Prepend(node),
        _ => [node],
    };

    private static async Task<List<MessageDto>> ReadAll(HttpClient client, string firstUrl)
    {
        var all = new List<MessageDto>();
        var url = firstUrl;
        for (var i = 0; i < 20; i++)
        {
            var page = await (await client.GetAsync(url)).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
            all.AddRange(page.Items);
            if (page.NextCursor is null)
            {
                return all;
            }

            url = firstUrl + "&cursor=" + page.NextCursor;
        }

        throw new InvalidOperationException("Paging did not end.");
    }
}
