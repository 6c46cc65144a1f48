using System.Net;
using System.Net.Http.Json;

namespace ModularChat.Conversations.Tests;

/// <summary>Anything a client can send wrong answers a 4xx ProblemDetails that names the problem, and stores nothing.</summary>
[Collection(AppCollection.Name)]
public sealed class BadInputTests(ConversationsApp app)
{
    public static TheoryData<string, string, int, string> BadMessages => new()
    {
        // body, field named in the answer, status, why
        { """{"role":"user","content":""", "$.content", 400, "malformed JSON" },
        { """{"role":"user","content":42}""", "$.content", 400, "wrong JSON type" },
        { """{"role":"robot","content":"hi"}""", "role", 400, "unknown role" },
        { """{"content":"hi"}""", "role", 400, "missing role" },
        { """{"role":"user","content":""}""", "content", 400, "empty content" },
        { """{"role":"user","content":"   "}""", "content", 400, "blank content" },
        { """{"role":"user"}""", "content", 400, "missing content" },
        { $$"""{"role":"user","content":"{{new string('x', 2001)}}"}""", "content", 422, "content over the configured maximum" },
        { """{"role":"user","content":"hi","externalId":"  "}""", "externalId", 400, "blank external id" },
        { $$"""{"role":"user","content":"hi","externalId":"{{new string('e', 201)}}"}""", "externalId", 422, "external id over the configured maximum" },
        { """{"role":"user","content":"hi","expectedVersion":0}""", "expectedVersion", 400, "non-positive expected version" },
        { """[1,2,3]""", "$", 400, "not an object" },
        // PostgreSQL stores no NUL character in text or jsonb: refused where the body is read, before the database.
        { """{"role":"user","content":"a\u0000b"}""", "content", 400, "NUL in content" },
        { """{"role":"user","content":"hi","externalId":"e\u0000"}""", "externalId", 400, "NUL in external id" },
        { """{"role":"user","content":"hi","metadata":{"k":"v\u0000"}}""", "metadata.k", 400, "NUL in a metadata value" },
        { """{"role":"user","content":"hi","metadata":{"k\u0000":"v"}}""", "metadata", 400, "NUL in a metadata key" },
        // The ends of .NET's range are clients' "no date"; PostgreSQL would store them as -infinity/infinity.
        { """{"role":"user","content":"hi","createdAt":"0001-01-01T00:00:00Z"}""", "createdAt", 400, "createdAt of DateTimeOffset.MinValue" },
        { """{"role":"user","content":"hi","createdAt":"0001-01-01T00:00:00.0000001Z"}""", "createdAt", 400, "createdAt stored as DateTimeOffset.MinValue" },
        { """{"role":"user","content":"hi","createdAt":"9999-12-31T23:59:59.9999999Z"}""", "createdAt", 400, "createdAt of DateTimeOffset.MaxValue" },
        { "", "body", 400, "empty body" },
    };

    [Theory]
    [MemberData(nameof(BadMessages))]
    public async Task A_bad_message_answers_a_problem_naming_it_and_stores_nothing(string body, string field, int status, string why)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = why })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        var problem = await (await client.PostRaw($"/api/conversations/{c.Id}/messages", body)).ShouldBeProblem(status);

        Assert.Contains(field, problem.ToString(), StringComparison.OrdinalIgnoreCase);
        var after = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(0, after.MessageCount);
        Assert.Equal(c.Version, after.Version);
    }

    [Fact]
    public async Task An_oversize_batch_answers_422_and_stores_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "batch" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var messages = Enumerable.Range(0, 51).Select(i => new { role = "user", content = $"m{i}" });

        var problem = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages })).ShouldBeProblem(422);

        Assert.Contains("at most 50", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var after = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(0, after.MessageCount);
    }

    [Fact]
    public async Task A_batch_with_a_NUL_character_in_one_message_answers_400_naming_it_and_stores_none_of_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "batch" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        var problem = await (await client.PostRaw($"/api/conversations/{c.Id}/messages/batch",
            """{"messages":[{"role":"user","content":"fine"},{"role":"user","content":"not\u0000fine"}]}""")).ShouldBeProblem(400);

        Assert.Contains("messages[1].content", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var after = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(0, after.MessageCount);
        // The conversation takes good appends afterwards.
        await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "fine" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
    }

    [Fact]
    public async Task A_title_with_a_NUL_character_answers_400_and_creates_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var problem = await (await client.PostRaw("/api/conversations", """{"title":"a\u0000b"}""")).ShouldBeProblem(400);

        Assert.Contains("'title'", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var list = await (await client.GetAsync("/api/conversations")).ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
        Assert.Empty(list.Items);
    }

    [Theory]
    [InlineData("""{"messages":[null]}""", "messages[0]")]
    [InlineData("""{"messages":[{"role":"user","content":"fine"},null]}""", "messages[1]")]
    [InlineData("""{"messages":[{"role":"user","content":"fine","metadata":{"k":null}}]}""", "messages[0].metadata")]
    public async Task A_batch_holding_a_null_answers_400_naming_it_and_stores_none_of_it(string body, string field)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "batch" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        var problem = await (await client.PostRaw($"/api/conversations/{c.Id}/messages/batch", body)).ShouldBeProblem(400);

        Assert.Contains(field, problem.ToString(), StringComparison.Ordinal);
        var after = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(0, after.MessageCount);
    }

    public static TheoryData<string, string, int> BadBatchMessages => new()
    {
        // the second message of a batch, the field its error is named by, status
        { """{"role":"robot","content":"b"}""", "messages[1].role", 400 },
        { """{"content":"b"}""", "messages[1].role", 400 },
        { """{"role":"user","content":""}""", "messages[1].content", 400 },
        { $$"""{"role":"user","content":"{{new string('x', 2001)}}"}""", "messages[1].content", 422 },
        { """{"role":"user","content":"b","externalId":"  "}""", "messages[1].externalId", 400 },
        { $$"""{"role":"user","content":"b","externalId":"{{new string('e', 201)}}"}""", "messages[1].externalId", 422 },
        { """{"role":"user","content":"b","metadata":{"":"v"}}""", "messages[1].metadata", 400 },
        { """{"role":"user","content":"b","createdAt":"0001-01-01T00:00:00Z"}""", "messages[1].createdAt", 400 },
    };

    [Theory]
    [MemberData(nameof(BadBatchMessages))]
    public async Task A_bad_message_in_a_batch_is_named_by_its_place_in_the_batch(string second, string field, int status)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "batch" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        var problem = await (await client.PostRaw($"/api/conversations/{c.Id}/messages/batch",
            $$"""{"messages":[{"role":"user","content":"a"},{{second}}]}""")).ShouldBeProblem(status);

        // Named where the field is (the key of errors) and in the messages a client shows: which message, not just 'role'.
        var error = Assert.Single(problem.GetProperty("errors").EnumerateObject());
        Assert.Equal(field, error.Name);
        Assert.StartsWith($"'{field}' ", error.Value[0].GetString(), StringComparison.Ordinal);
        Assert.StartsWith($"'{field}' ", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var after = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(0, after.MessageCount);
    }

    [Theory]
    [InlineData("/messages", "null")]
    [InlineData("/messages", "")]
    [InlineData("/messages/batch", "null")]
    public async Task A_missing_request_body_answers_400_saying_so_in_the_clients_terms(string path, string body)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "body" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        var problem = await (await client.PostRaw($"/api/conversations/{c.Id}{path}", body)).ShouldBeProblem(400);

        // Not ASP.NET's "Implicit body inferred for parameter \"body\" but no body was provided. Did you mean to use a Service instead?"
        Assert.Equal("The request body is required (a JSON object).", problem.GetProperty("detail").GetString());
    }

    [Theory]
    [InlineData("/api/conversations/not-a-guid", "id", "'not-a-guid' is not a valid value for 'id': expected a UUID.")]
    [InlineData("/api/conversations?limit=ten", "limit", "'ten' is not a valid value for 'limit': expected a whole number.")]
    [InlineData("/api/conversations/00000000-0000-0000-0000-000000000001/messages/first", "sequence", "'first' is not a valid value for 'sequence': expected a whole number.")]
    [InlineData("/api/conversations/00000000-0000-0000-0000-000000000001/messages?includeArchived=maybe", "includeArchived", "'maybe' is not a valid value for 'includeArchived': expected true or false.")]
    public async Task A_route_or_query_value_of_the_wrong_kind_answers_400_naming_it_without_the_frameworks_wording(string url, string field, string detail)
    {
        using var client = app.Client(ModularChatApp.NewUser());

        var problem = await (await client.GetAsync(url)).ShouldBeProblem(400);

        // Not "Failed to bind parameter \"Guid id\" from \"not-a-guid\"."
        Assert.Equal(detail, problem.GetProperty("detail").GetString());
        Assert.Equal([detail], problem.GetProperty("errors").GetProperty(field).EnumerateArray().Select(e => e.GetString()));
    }

    [Theory]
    [InlineData("/api/conversations", """{"title":"t","metadata":{"k":null}}""")]
    [InlineData("/messages", """{"role":"user","content":"hi","metadata":{"k":null}}""")]
    public async Task A_null_metadata_value_answers_400_naming_it(string path, string body)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        if (path.StartsWith('/') && !path.StartsWith("/api", StringComparison.Ordinal))
        {
            var c = await (await client.PostJson("/api/conversations", new { title = "meta" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
            path = $"/api/conversations/{c.Id}{path}";
        }

        var problem = await (await client.PostRaw(path, body)).ShouldBeProblem(400);

        Assert.Contains("metadata", problem.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_empty_batch_answers_400()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "batch" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = Array.Empty<object>() })).ShouldBeProblem(400);
    }

    [Fact]
    public async Task A_request_body_over_the_configured_size_answers_413()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "big" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        // Limits:MaxRequestBodyBytes is 200,000 in this host.
        var huge = new { messages = new[] { new { role = "user", content = "small" } }, padding = new string('p', 250_000) };

        var json = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(huge);

        // Announced by Content-Length, and sent chunked (no length: found out while the body is read).
        using var sized = new ByteArrayContent(json);
        sized.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        using var chunked = new StreamContent(new UnknownLengthStream(json));
        chunked.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        foreach (var content in new HttpContent[] { sized, chunked })
        {
            var problem = await (await client.PostAsync($"/api/conversations/{c.Id}/messages/batch", content)).ShouldBeProblem(413);
            Assert.Contains("Limits:MaxRequestBodyBytes", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        var after = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(0, after.MessageCount);
    }

    [Fact]
    public async Task Errors_the_framework_answers_by_status_say_what_to_change()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "status" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        using var text = new StringContent("""{"role":"user","content":"hi"}""", System.Text.Encoding.UTF8, "text/plain");
        var unsupported = await (await client.PostAsync($"/api/conversations/{c.Id}/messages", text)).ShouldBeProblem(415);
        Assert.Contains("application/json", unsupported.GetProperty("detail").GetString(), StringComparison.Ordinal);
        // No Content-Type, or one that does not parse: the same answer (the binder refuses those itself).
        foreach (var contentType in new[] { null, "application/json;;;" })
        {
            using var body = new ByteArrayContent("""{"role":"user","content":"hi"}"""u8.ToArray());
            if (contentType is not null)
            {
                body.Headers.TryAddWithoutValidation("Content-Type", contentType);
            }

            var refused = await (await client.PostAsync($"/api/conversations/{c.Id}/messages", body)).ShouldBeProblem(415);
            Assert.Equal((unsupported.GetProperty("title").GetString(), unsupported.GetProperty("detail").GetString()),
                (refused.GetProperty("title").GetString(), refused.GetProperty("detail").GetString()));
        }

        var method = await (await client.PutAsync($"/api/conversations/{c.Id}", JsonContent.Create(new { title = "x" }))).ShouldBeProblem(405);
        Assert.Matches("PUT is not allowed on this path; it takes .*PATCH", method.GetProperty("detail").GetString());

        var nowhere = await (await client.GetAsync("/api/no-such-thing")).ShouldBeProblem(404);
        Assert.Contains("/openapi/v1.json", nowhere.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(new byte[] { 0x63, 0x61, 0x66, 0xe9 }, "UTF-8")] // "café" in Latin-1, sent as UTF-8
    [InlineData(new byte[] { 0x5c, 0x75, 0x64, 0x38, 0x30, 0x30 }, "lone surrogate")] // the escape \ud800, half of a pair
    public async Task Text_that_is_not_unicode_answers_400_naming_the_field_and_what_is_wrong(byte[] content, string named)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "bytes" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        using var body = new ByteArrayContent([.. "{\"role\":\"user\",\"content\":\""u8, .. content, .. "\"}"u8]);
        body.Headers.TryAddWithoutValidation("Content-Type", "application/json; charset=utf-8");

        var problem = await (await client.PostAsync($"/api/conversations/{c.Id}/messages", body)).ShouldBeProblem(400);

        Assert.Contains(named, Assert.Single(problem.GetProperty("errors").GetProperty("content").EnumerateArray()).GetString(), StringComparison.Ordinal);
        Assert.Equal(0, (await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK)).MessageCount);
    }

    [Theory]
    [InlineData("application/json; charset=windows-1252", 415)]
    [InlineData("application/json; charset=bogus", 415)]
    [InlineData("application/json; charset=utf-7", 415)] // known to .NET but turned off (SYSLIB0001): answered 500
    [InlineData("application/json; charset=\"utf-8\"", 201)]
    [InlineData("application/json; charset=UTF-8", 201)]
    public async Task A_json_body_in_a_charset_the_service_cannot_read_answers_415_naming_it(string contentType, int status)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "charsets" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        using var body = new ByteArrayContent("""{"role":"user","content":"hi"}"""u8.ToArray());
        body.Headers.TryAddWithoutValidation("Content-Type", contentType);

        var response = await client.PostAsync($"/api/conversations/{c.Id}/messages", body);

        Assert.Equal(status, (int)response.StatusCode);
        if (status == 415)
        {
            var problem = await response.ShouldBeProblem(415);
            Assert.Contains("charset", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
            Assert.Equal(0, (await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK)).MessageCount);
        }
    }

    public static TheoryData<string, byte[], int, string?> BodiesInOtherCharsets => new()
    {
        // charset, the content's bytes (inside the JSON string), status, what is stored
        { "iso-8859-1", [0x63, 0x61, 0x66, 0xe9], 201, "caf\u00e9" },
        { "utf-16", System.Text.Encoding.Unicode.GetBytes("caf\u00e9"), 201, "caf\u00e9" },
        // Bytes the charset does not have: before, stored as "caf?" and "\ufffd", text the client never sent.
        { "us-ascii", [0x63, 0x61, 0x66, 0xe9], 400, null },
        { "utf-16", [0x61, 0x00, 0x00, 0xd8], 400, null }, // "a" then a lone high surrogate
    };

    [Theory]
    [MemberData(nameof(BodiesInOtherCharsets))]
    public async Task A_body_in_another_charset_is_read_in_it_strictly_and_bytes_it_does_not_have_answer_400(string charset, byte[] content, int status, string? stored)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "charsets" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var encoding = System.Text.Encoding.GetEncoding(charset);
        using var body = new ByteArrayContent([.. encoding.GetBytes("{\"role\":\"user\",\"content\":\""), .. content, .. encoding.GetBytes("\"}")]);
        body.Headers.TryAddWithoutValidation("Content-Type", $"application/json; charset={charset}");

        var response = await client.PostAsync($"/api/conversations/{c.Id}/messages", body);

        Assert.Equal(status, (int)response.StatusCode);
        var messages = await (await client.GetAsync($"/api/conversations/{c.Id}/messages")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        if (stored is null)
        {
            var problem = await response.ShouldBeProblem(400);
            Assert.Contains($"'{charset}'", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
            Assert.Empty(messages.Items);
        }
        else
        {
            Assert.Equal(stored, Assert.Single(messages.Items).Content);
        }
    }

    [Fact]
    public async Task A_request_without_a_body_is_not_judged_by_the_charset_of_a_stray_content_type()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        using var request = new HttpRequestMessage(HttpMethod.Get, "/api/conversations") { Content = new ByteArrayContent([]) };
        request.Content.Headers.TryAddWithoutValidation("Content-Type", "application/json; charset=bogus");

        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(request)).StatusCode);
    }

    [Theory]
    [InlineData("application/json; charset=windows-1252", 415)]
    [InlineData("application/json; charset=\"utf-8\"", 201)]
    public async Task A_body_without_length_or_chunking_as_http2_sends_it_is_judged_by_its_charset_too(string contentType, int status)
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var c = await (await client.PostJson("/api/conversations", new { title = "charsets" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        // Neither Content-Length nor Transfer-Encoding: over HTTP/2 the server knows from the stream that a body follows.
        var context = await app.Host.Server.SendAsync(http =>
        {
            http.Request.Method = "POST";
            http.Request.Path = $"/api/conversations/{c.Id}/messages";
            http.Request.Protocol = "HTTP/2";
            http.Request.Headers.Authorization = "Bearer " + app.Token(user);
            http.Request.ContentType = contentType;
            http.Request.Body = new MemoryStream("""{"role":"user","content":"hi"}"""u8.ToArray());
            http.Features.Set<Microsoft.AspNetCore.Http.Features.IHttpRequestBodyDetectionFeature>(new BodyFollows());
        });

        Assert.Null(context.Request.ContentLength);
        Assert.Equal(0, context.Request.Headers.TransferEncoding.Count);
        Assert.Equal(status, context.Response.StatusCode); // before: 500 for the unknown charset
        Assert.Equal(status == 201 ? 1 : 0,
            (await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK)).MessageCount);
    }

    /// <summary>What Kestrel's HTTP/2 stream says of a request whose headers do not end the stream.</summary>
    private sealed class BodyFollows : Microsoft.AspNetCore.Http.Features.IHttpRequestBodyDetectionFeature
    {
        public bool CanHaveBody => true;
    }

    /// <summary>A body whose length the client does not announce (HttpClient sends it chunked).</summary>
    private sealed class UnknownLengthStream(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;
    }

    [Theory]
    [InlineData("/api/conversations/not-a-guid")]
    [InlineData("/api/conversations/not-a-guid/messages")]
    [InlineData("/api/conversations/12345/messages/1")]
    public async Task A_malformed_id_answers_400_naming_the_id(string url)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var problem = await (await client.GetAsync(url)).ShouldBeProblem(400);
        Assert.Contains("id", problem.GetProperty("detail").GetString(), StringComparison.OrdinalIgnoreCase);
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("1.5")]
    [InlineData("99999999999999999999")]
    public async Task A_malformed_sequence_answers_400_naming_it(string sequence)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "sequence" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        var problem = await (await client.GetAsync($"/api/conversations/{c.Id}/messages/{sequence}")).ShouldBeProblem(400);

        Assert.Contains("sequence", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unknown_id_answers_404()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await (await client.GetAsync($"/api/conversations/{Guid.NewGuid()}")).ShouldBeProblem(404);
        await (await client.PostJson($"/api/conversations/{Guid.NewGuid()}/messages", new { role = "user", content = "x" })).ShouldBeProblem(404);
    }

    // The nil id is a well-formed id that no conversation has (Marten refuses a stream under it: these answered 500).
    [Theory]
    [InlineData("GET", "")]
    [InlineData("PATCH", "", """{"title":"renamed"}""")]
    [InlineData("DELETE", "")]
    [InlineData("POST", "/messages", """{"role":"user","content":"hello"}""")]
    [InlineData("POST", "/messages/batch", """{"messages":[{"role":"user","content":"hello"}]}""")]
    [InlineData("GET", "/messages")]
    [InlineData("GET", "/context")]
    [InlineData("POST", "/summary", "{}")]
    public async Task The_nil_id_answers_404_on_every_conversation_endpoint(string method, string path, string? body = null)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        using var request = new HttpRequestMessage(new HttpMethod(method), $"/api/conversations/{Guid.Empty}{path}");
        if (body is not null)
        {
            request.Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
        }

        var problem = await (await client.SendAsync(request)).ShouldBeProblem(404);
        Assert.Contains(Guid.Empty.ToString(), problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("/api/conversations?cursor=garbage")]
    [InlineData("/api/conversations?cursor=bXNnOmZ8MQ")] // a message cursor ("msg:f|1") used on the conversation list
    [InlineData("/api/conversations?limit=0")]
    [InlineData("/api/conversations?limit=100000")]
    [InlineData("/api/conversations?limit=abc")]
    public async Task A_bad_list_cursor_or_limit_answers_400(string url)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var problem = await (await client.GetAsync(url)).ShouldBeProblem(400);
        Assert.Matches("cursor|limit", problem.ToString());
    }

    [Theory]
    [InlineData("cursor=%%%", "cursor")]
    [InlineData("cursor=Y29udjoxfDI", "cursor")] // a conversation-list cursor
    [InlineData("cursor=bXNnOmZ8MQ", "cursor")] // "msg:f|1": the shape of cursors before they were bound to their list
    [InlineData("cursor=msg:{scope}|x|1", "cursor")] // unknown direction
    [InlineData("cursor=msg:{scope}|f|-1", "cursor")] // negative sequence
    [InlineData("cursor=msg:{scope}|f", "cursor")] // a field short
    [InlineData("direction=sideways", "direction")]
    [InlineData("direction=1", "direction")] // a number, once read as backward
    [InlineData("direction=forward&direction=backward", "direction")] // sent twice ("forward,backward"), once read as backward
    [InlineData("direction=forward&cursor=msg:{scope}|b|1", "direction")] // a backward cursor
    [InlineData("cursor=msg:{scope}|f|1&direction=Backward", "direction")] // a forward cursor
    public async Task A_bad_message_cursor_or_direction_answers_400(string query, string named)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "cursor" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        if (query.Contains("cursor=msg:", StringComparison.Ordinal))
        {
            // Made from a real cursor of this conversation, so that only the part the case is about is wrong.
            (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = new[] { new { role = "user", content = "a" }, new { role = "user", content = "b" } } }))
                .EnsureSuccessStatusCode();
            var real = (await (await client.GetAsync($"/api/conversations/{c.Id}/messages?limit=1")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK)).NextCursor!;
            var text = System.Text.Encoding.UTF8.GetString(System.Buffers.Text.Base64Url.DecodeFromChars(real));
            var scope = text["msg:".Length..text.IndexOf('|', StringComparison.Ordinal)];
            query = string.Join('&', query.Split('&').Select(p => p.StartsWith("cursor=msg:", StringComparison.Ordinal)
                ? "cursor=" + System.Buffers.Text.Base64Url.EncodeToString(System.Text.Encoding.UTF8.GetBytes(p["cursor=".Length..].Replace("{scope}", scope, StringComparison.Ordinal)))
                : p));
        }

        var problem = await (await client.GetAsync($"/api/conversations/{c.Id}/messages?{query}")).ShouldBeProblem(400);
        Assert.Equal(named, Assert.Single(problem.GetProperty("errors").EnumerateObject()).Name);
    }

    [Fact]
    public async Task A_query_parameter_that_takes_one_value_sent_twice_answers_400_naming_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await (await client.PostJson("/api/conversations", new { title = "twice" })).ReadAs<ConversationDto>(HttpStatusCode.Created);

        // Before: the context searched for "wedding,cake", which nobody asked.
        var problem = await (await client.GetAsync($"/api/conversations/{c.Id}/context?maxTokens=500&query=wedding&query=cake")).ShouldBeProblem(400);

        Assert.True(problem.GetProperty("errors").TryGetProperty("query", out _), problem.ToString());
        // Parameters that take several values still do.
        var both = await (await client.GetAsync("/api/conversations?metadata=a%3D1&metadata=b%3D2")).ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
        Assert.Empty(both.Items);
    }

    [Fact]
    public async Task A_title_over_the_limit_answers_422_and_creates_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await (await client.PostJson("/api/conversations", new { title = new string('t', 201) })).ShouldBeProblem(422);
        var list = await (await client.GetAsync("/api/conversations")).ReadAs<PageDto<ConversationDto>>(HttpStatusCode.OK);
        Assert.Empty(list.Items);

        // The limit is the stored title's: the spaces around it are trimmed, so they do not count.
        var padded = await (await client.PostJson("/api/conversations", new { title = $"  {new string('t', 200)}  " })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        Assert.Equal(new string('t', 200), padded.Title);
        var renamed = await (await client.PatchJson($"/api/conversations/{padded.Id}", new { title = $" {new string('u', 200)} " })).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(new string('u', 200), renamed.Title);
    }

    [Theory]
    [InlineData("/api/nothing-here")]
    [InlineData("/openapi/v2.json")] // before: the OpenAPI endpoint's own 404, in text/plain
    public async Task An_unknown_route_answers_a_404_problem(string path)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var problem = await (await client.GetAsync(path)).ShouldBeProblem(404);
        Assert.Contains("/openapi/v1.json", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }
}
