using System.Net;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Features.Chat;
using ModularChat.Testing.Fakes;

namespace ModularChat.Providers.Tests;

[Collection(ChatCollection.Name)]
public sealed class ChatTests(ProvidersChatApp app)
{
    /// <summary>Each test answers only its own requests: the fake model serves every test of the collection.</summary>
    internal static string Marker() => "m" + Guid.NewGuid().ToString("N")[..12];

    [Fact]
    public async Task Without_a_provider_chat_answers_409_explaining_how_to_add_one_and_stores_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await client.StartConversationAsync();

        var problem = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = "hello?" })).ShouldBeProblem(409);

        Assert.Contains("POST /api/providers", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Empty(await client.MessagesAsync(conversation));
        // A conversation that does not exist is a 404 first, provider or not (before: the same 409).
        await (await client.PostJson($"/api/conversations/{Guid.NewGuid()}/chat", new { content = "hello?" })).ShouldBeProblem(404);
    }

    [Fact]
    public async Task With_providers_but_none_the_default_chat_says_so_instead_of_that_there_is_none()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, name: "one", isDefault: false);
        await client.AddProviderAsync(app.Model.BaseUrl, name: "two", isDefault: false);
        var conversation = await client.StartConversationAsync();

        var problem = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = "hello?" })).ShouldBeProblem(409);

        Assert.Contains("has 2 providers but none is the default", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Empty(await client.MessagesAsync(conversation));
        // Named, one of them answers.
        Assert.Equal(HttpStatusCode.OK, (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = "hello?", provider = "two" })).StatusCode);
    }

    [Fact]
    public async Task A_streamed_turn_without_a_provider_answers_the_same_409_problem()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await client.StartConversationAsync();
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat")
        {
            Content = new StringContent("""{"content":"hello?"}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));

        var problem = await (await client.SendAsync(request)).ShouldBeProblem(409);

        Assert.Contains("POST /api/providers", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Empty(await client.MessagesAsync(conversation));
    }

    [Fact]
    public async Task A_chat_turn_stores_the_user_message_and_the_answer_with_its_token_usage()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, "sk-chat-key-0123456789abc");
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => new FakeReply("Lisbon is lovely in May.", PromptTokens: 42, CompletionTokens: 7), app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{marker} When should I visit Lisbon?");

        Assert.Equal("Lisbon is lovely in May.", turn.Answer.Content);
        Assert.Equal(1, turn.UserMessage.Sequence);
        Assert.Equal(2, turn.Answer.Sequence);
        Assert.Equal(42, turn.Usage.InputTokens);
        Assert.Equal(7, turn.Usage.OutputTokens);
        Assert.Equal("fake", turn.Provider);
        Assert.Empty(turn.ToolCalls);

        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "assistant"], messages.Select(m => m.Role));
        Assert.Equal("42", messages[1].Metadata!["inputTokens"]);
        Assert.Equal("7", messages[1].Metadata!["outputTokens"]);
        Assert.Equal("fake-model", messages[1].Metadata!["model"]);
        Assert.Contains(app.Model.Requests, r => r.Authorization == "Bearer sk-chat-key-0123456789abc" && r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_negative_token_count_from_the_model_is_neither_reported_nor_stored_as_a_count(bool streamed)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => new FakeReply("Fine.", PromptTokens: -1, CompletionTokens: 7), app.Model.Responder);

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} count") };
        if (streamed)
        {
            request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        }

        using var response = await client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var turn = streamed ? ParseEvents(text).Last().Data : JsonDocument.Parse(text).RootElement;

        // It used to report and store inputTokens -1 (and a total of 6, counting it).
        var usage = turn.GetProperty("usage");
        Assert.Equal(JsonValueKind.Null, usage.GetProperty("inputTokens").ValueKind);
        Assert.Equal(7, usage.GetProperty("outputTokens").GetInt64());
        Assert.Equal(JsonValueKind.Null, usage.GetProperty("totalTokens").ValueKind);
        var answer = (await client.MessagesAsync(conversation))[1];
        Assert.False(answer.Metadata!.ContainsKey("inputTokens"), string.Join(", ", answer.Metadata));
        Assert.False(answer.Metadata.ContainsKey("totalTokens"), string.Join(", ", answer.Metadata));
        Assert.Equal("7", answer.Metadata["outputTokens"]);
    }

    [Fact]
    public async Task A_turn_retried_with_its_external_id_answers_the_stored_turn_without_asking_the_model_again()
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        var asked = 0;
        app.Model.Responder = Answer(marker, _ => new FakeReply($"Answer number {Interlocked.Increment(ref asked)}.", PromptTokens: 9, CompletionTokens: 3), app.Model.Responder);
        var body = new { content = $"{marker} When should I visit Lisbon?", externalId = "turn-1" };

        var first = await (await client.PostJson($"/api/conversations/{conversation}/chat", body)).ReadAs<JsonElement>(HttpStatusCode.OK);
        var retried = await (await client.PostJson($"/api/conversations/{conversation}/chat", body)).ReadAs<JsonElement>(HttpStatusCode.OK);
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat")
        {
            Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json"),
        };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var streamed = await client.SendAsync(request);
        var done = Assert.Single(ParseEvents(await streamed.Content.ReadAsStringAsync()));

        Assert.Equal(1, asked);
        Assert.False(first.GetProperty("replayed").GetBoolean());
        foreach (var again in new[] { retried, done.Data })
        {
            Assert.True(again.GetProperty("replayed").GetBoolean());
            Assert.Equal(first.GetProperty("answer").ToString(), again.GetProperty("answer").ToString());
            Assert.Equal(3, again.GetProperty("usage").GetProperty("outputTokens").GetInt64());
        }

        Assert.Equal("done", done.Name);
        Assert.Equal(["user", "assistant"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Fact]
    public async Task Identical_turns_sent_at_once_all_answer_with_the_one_answer_stored()
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        var asked = 0;
        app.Model.Responder = Answer(marker, _ => new FakeReply($"Answer number {Interlocked.Increment(ref asked)}.", Delay: TimeSpan.FromMilliseconds(500)), app.Model.Responder);
        var body = new { content = $"{marker} Is it raining?", externalId = "same" };

        var turns = await Task.WhenAll(Enumerable.Range(0, 3).Select(async _ =>
            await (await client.PostJson($"/api/conversations/{conversation}/chat", body)).ReadAs<JsonElement>(HttpStatusCode.OK)));

        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "assistant"], messages.Select(m => m.Role));
        Assert.All(turns, t => Assert.Equal(messages[1].Content, t.GetProperty("answer").GetProperty("content").GetString()));
    }

    [Fact]
    public async Task Turns_sent_at_once_on_one_conversation_each_answer_their_own_message()
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        // A slow model that answers the last user message it was given.
        app.Model.Responder = Answer(marker, r => new FakeReply(
            "Answering: " + r.Messages.Last(m => m?["role"]?.ToString() == "user")!["content"], Delay: TimeSpan.FromMilliseconds(300)), app.Model.Responder);

        var turns = await Task.WhenAll(Enumerable.Range(1, 5).Select(async i =>
            (Content: $"{marker} question {i}", Turn: await client.ChatAsync(conversation, $"{marker} question {i}"))));

        // Each turn's context used to be the conversation's latest: a turn whose message another turn's followed answered
        // that one (stored as the answer to its own), so one message was answered twice and another never.
        var messages = (await client.MessagesAsync(conversation)).ToDictionary(m => m.Sequence);
        Assert.All(turns, t =>
        {
            Assert.Equal("Answering: " + t.Content, t.Turn.Answer.Content);
            Assert.Equal(t.Content, messages[t.Turn.UserMessage.Sequence].Content);
            Assert.Equal(t.Turn.UserMessage.Sequence.ToString(System.Globalization.CultureInfo.InvariantCulture),
                messages[t.Turn.Answer.Sequence].Metadata!["replyTo"]);
        });
        Assert.Equal(5, turns.Select(t => t.Turn.UserMessage.Sequence).Distinct().Count());
    }

    [Fact]
    public async Task A_failed_turn_retried_after_the_conversation_went_on_answers_409_instead_of_answering_another_message()
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        var asked = new StrongBox<int>();
        app.Model.Responder = Answer(marker, _ => Interlocked.Increment(ref asked.Value) == 1 ? FakeReply.Error(500, "boom") : FakeReply.Text("Answered."), app.Model.Responder);
        var body = new { content = $"{marker} What about Porto?", externalId = "porto" };

        await (await client.PostJson($"/api/conversations/{conversation}/chat", body)).ShouldBeProblem(502);
        (await client.PostJson($"/api/conversations/{conversation}/messages", new { role = "user", content = "Something else meanwhile." })).EnsureSuccessStatusCode();
        var problem = await (await client.PostJson($"/api/conversations/{conversation}/chat", body)).ShouldBeProblem(409);

        Assert.Contains("was not answered", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(1, asked.Value);
        Assert.Equal(["user", "user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Fact]
    public async Task A_turn_retried_after_retention_deleted_its_answer_answers_409_saying_so_without_asking_the_model()
    {
        using var client = app.Client(app.DeletingTenant);
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        var asked = new StrongBox<int>();
        app.Model.Responder = Answer(marker, _ => { Interlocked.Increment(ref asked.Value); return FakeReply.Text("Try the trams."); }, app.Model.Responder);
        var body = new { content = $"{marker} How do I get around Lisbon?", externalId = "lisbon" };
        (await client.PostJson($"/api/conversations/{conversation}/chat", body)).EnsureSuccessStatusCode();

        // The conversation reaches the first milestone (10): once summarized, retention deletes all ten messages.
        var more = Enumerable.Range(3, 8).Select(i => new { role = i % 2 == 1 ? "user" : "assistant", content = $"Message {i} about Lisbon." });
        (await client.PostJson($"/api/conversations/{conversation}/messages/batch", new { messages = more })).EnsureSuccessStatusCode();
        await Eventually.Until(() => client.MessagesAsync(conversation), messages => messages.Count == 0, seconds: 60,
            what: "Retention never deleted the summarized messages");
        var askedBefore = asked.Value; // the summary may have asked the tenant's model too

        var problem = await (await client.PostJson($"/api/conversations/{conversation}/chat", body)).ShouldBeProblem(409);

        var detail = problem.GetProperty("detail").GetString();
        Assert.Contains("was answered (message 2)", detail, StringComparison.Ordinal);
        Assert.Contains("retention", detail, StringComparison.Ordinal);
        Assert.Equal(1, problem.GetProperty("messageSequence").GetInt64());
        Assert.Equal(2, problem.GetProperty("answerSequence").GetInt64());
        Assert.Equal(askedBefore, asked.Value);
        Assert.Empty(await client.MessagesAsync(conversation));
    }

    [Fact]
    public async Task A_failed_turn_retried_after_retention_deleted_its_message_answers_409_saying_so_without_asking_the_model()
    {
        using var client = app.Client(app.DeletingTenant);
        await client.AddProviderAsync(app.Model.BaseUrl, name: "museums"); // the tenant is shared: the first provider added is its default
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        var asked = new StrongBox<int>();
        // The turn fails; what asks next (the summary, when the tenant's model writes it) is answered.
        app.Model.Responder = Answer(marker, _ => Interlocked.Increment(ref asked.Value) == 1 ? FakeReply.Error(500, "boom") : FakeReply.Text("Museums."),
            app.Model.Responder);
        var body = new { content = $"{marker} Which museum opens on Mondays?", externalId = "mondays" };
        await (await client.PostJson($"/api/conversations/{conversation}/chat", body)).ShouldBeProblem(502);

        // Summarized now: retention deletes the one message (the tenant keeps none of what a summary covers).
        (await client.PostAsync($"/api/conversations/{conversation}/summary", null)).EnsureSuccessStatusCode();
        await Eventually.Until(() => client.MessagesAsync(conversation), messages => messages.Count == 0, seconds: 60,
            what: "Retention never deleted the summarized message");
        var askedBefore = asked.Value;

        var problem = await (await client.PostJson($"/api/conversations/{conversation}/chat", body)).ShouldBeProblem(409);

        Assert.Contains("taken out of the conversation by retention", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(1, problem.GetProperty("messageSequence").GetInt64());
        Assert.Equal(askedBefore, asked.Value);
    }

    [Fact]
    public async Task A_failed_turn_retried_at_once_is_asked_again()
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        var asked = new StrongBox<int>();
        app.Model.Responder = Answer(marker, _ => Interlocked.Increment(ref asked.Value) == 1 ? FakeReply.Error(500, "boom") : FakeReply.Text("Answered."), app.Model.Responder);
        var body = new { content = $"{marker} What about Porto?", externalId = "porto-again" };

        await (await client.PostJson($"/api/conversations/{conversation}/chat", body)).ShouldBeProblem(502);
        var turn = await (await client.PostJson($"/api/conversations/{conversation}/chat", body)).ReadAs<JsonElement>(HttpStatusCode.OK);

        Assert.Equal("Answered.", turn.GetProperty("answer").GetProperty("content").GetString());
        Assert.Equal(1, turn.GetProperty("userMessage").GetProperty("sequence").GetInt64());
        Assert.Equal(2, asked.Value);
    }

    [Fact]
    public async Task A_streamed_turn_whose_conversation_is_deleted_while_it_answers_ends_with_an_error_event()
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        app.Model.Responder = Answer(marker, _ => new FakeReply("one two three four five six", ChunkDelay: TimeSpan.FromMilliseconds(250)), app.Model.Responder);

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} count slowly") };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        var streaming = client.SendAsync(request);
        await Eventually.Until(() => Task.FromResult(app.Model.Requests.Any(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal))), asked => asked,
            seconds: 60, what: "the model asked");
        (await client.DeleteAsync($"/api/conversations/{conversation}")).EnsureSuccessStatusCode();

        using var response = await streaming;
        var events = ParseEvents(await response.Content.ReadAsStringAsync());

        var last = events[^1];
        Assert.Equal("error", last.Name);
        Assert.Equal(404, last.Data.GetProperty("status").GetInt32());
        // Like every other ProblemDetails (it used to come without them).
        Assert.Equal("https://tools.ietf.org/html/rfc9110#section-15.5.5", last.Data.GetProperty("type").GetString());
        Assert.False(string.IsNullOrEmpty(last.Data.GetProperty("traceId").GetString()));
    }

    [Fact]
    public async Task A_tool_round_trip_inside_a_chat_turn_calls_the_mcp_tool_and_stores_the_call_and_its_result()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        app.Model.Responder = Answer(marker, request => request.Messages.Any(m => m?["role"]?.ToString() == "tool")
            ? FakeReply.Text("2 + 3 = " + request.Messages.Last(m => m?["role"]?.ToString() == "tool")!["content"])
            : FakeReply.Calls(new FakeToolCall("call_1", "add", """{"a":2,"b":3}""")), app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{marker} what is 2 + 3?");

        Assert.Equal("2 + 3 = 5", turn.Answer.Content);
        var call = Assert.Single(turn.ToolCalls);
        Assert.Equal(("calculator", "add", "5", false), (call.Server, call.Tool, call.Result, call.Failed));
        var offered = app.Model.Requests.First(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal));
        Assert.Contains("add", offered.ToolNames);

        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "tool", "tool", "assistant"], messages.Select(m => m.Role));
        Assert.Equal("tool_call", messages[1].Metadata!["kind"]);
        Assert.Contains("\"a\"", messages[1].Content, StringComparison.Ordinal);
        Assert.Equal(("tool_result", "5", "calculator"), (messages[2].Metadata!["kind"], messages[2].Content, messages[2].Metadata!["server"]));
        Assert.Equal(call.CallSequence, messages[1].Sequence);
        Assert.Equal(call.ResultSequence, messages[2].Sequence);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_tool_that_answers_with_an_error_gives_the_model_its_words_and_the_call_is_marked_failed(bool streamed)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        await client.AddMcpServerAsync("unruly", app.Mcp.UnrulyUrl("error"));
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "both failed", app.Model.Responder,
            new FakeToolCall("call_x", "explode", """{"text":"now"}"""), new FakeToolCall("call_f", "fail", "{}"));

        ChatTurnDto turn;
        if (streamed)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} try both") };
            request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            var events = ParseEvents(await response.Content.ReadAsStringAsync());
            var toolResults = events.Where(e => e.Name == "tool-result").ToList();
            Assert.Equal(2, toolResults.Count); // one for each of the two calls
            Assert.All(toolResults, e => Assert.True(e.Data.GetProperty("failed").GetBoolean(), e.Data.ToString()));
            turn = events.Last().Data.Deserialize<ChatTurnDto>(new JsonSerializerOptions(JsonSerializerDefaults.Web))!;
        }
        else
        {
            turn = await client.ChatAsync(conversation, $"{marker} try both");
        }

        // A JSON-RPC error answer (it used to reach the model as "Error: Function failed.") and a result marked isError.
        var explode = turn.ToolCalls.Single(c => c.Tool == "explode");
        Assert.True(explode.Failed);
        Assert.StartsWith("The tool reported an error:", explode.Result, StringComparison.Ordinal);
        Assert.Contains("explode exploded: the disk is full", explode.Result, StringComparison.Ordinal);
        var fail = turn.ToolCalls.Single(c => c.Tool == "fail");
        Assert.True(fail.Failed);
        Assert.StartsWith("The tool reported an error:", fail.Result, StringComparison.Ordinal);
        var sent = app.Model.Requests.Last(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).Messages;
        Assert.Contains(sent, m => m?["role"]?.ToString() == "tool" && m["content"]!.ToString().Contains("the disk is full", StringComparison.Ordinal));
        var results = (await client.MessagesAsync(conversation)).Where(m => m.Metadata?.GetValueOrDefault("kind") == "tool_result").ToList();
        Assert.Equal(2, results.Count);
        Assert.All(results, r => Assert.Equal("true", r.Metadata!["failed"]));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_call_of_a_tool_the_model_was_not_offered_is_reported_and_stored_as_failed_and_the_model_is_told(bool streamed)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "no such tool", app.Model.Responder, new FakeToolCall("call_n", "delete_everything", """{"really":true}"""));

        var turn = await TurnWithOneFailedToolCallAsync(client, conversation, $"{marker} go", streamed);

        // It used to be reported and stored as a call that did not fail, with the result "Error: Requested function ... not found.".
        var call = Assert.Single(turn.ToolCalls);
        Assert.True(call.Failed);
        Assert.Equal(("", "delete_everything"), (call.Server, call.Tool));
        Assert.Equal("The tool 'delete_everything' is not one of the tools offered in this conversation, so nothing was called. Call only the tools offered.",
            call.Result);
        var sent = app.Model.Requests.Last(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).Messages;
        Assert.Contains(sent, m => m?["role"]?.ToString() == "tool" && m["content"]!.ToString() == call.Result);
        var result = (await client.MessagesAsync(conversation)).Single(m => m.Metadata?.GetValueOrDefault("kind") == "tool_result");
        Assert.Equal(("true", call.Result), (result.Metadata!["failed"], result.Content));
        Assert.Equal("no such tool", turn.Answer.Content);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_call_of_a_tool_when_none_were_offered_is_stored_as_failed_and_the_model_is_told(bool streamed)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "nothing to call", app.Model.Responder, new FakeToolCall("call_z", "search_web", """{"q":"x"}"""));

        var turn = await TurnWithOneFailedToolCallAsync(client, conversation, $"{marker} go", streamed);

        Assert.Empty(app.Model.Requests.First(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).ToolNames);
        var call = Assert.Single(turn.ToolCalls);
        Assert.True(call.Failed);
        Assert.Equal("The tool 'search_web' is not one of the tools offered in this conversation, so nothing was called. Call only the tools offered.",
            call.Result);
        var result = (await client.MessagesAsync(conversation)).Single(m => m.Metadata?.GetValueOrDefault("kind") == "tool_result");
        Assert.Equal(("true", call.Result), (result.Metadata!["failed"], result.Content));
        Assert.Equal("nothing to call", turn.Answer.Content);
    }

    [Fact]
    public async Task A_tool_error_result_that_quotes_a_credential_reaches_the_model_and_the_conversation_without_it()
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        await client.AddMcpServerAsync("leaky", app.Mcp.UnrulyUrl("leaky"));
        app.Model.Responder = CallsThenAnswer(marker, "it broke", app.Model.Responder, new FakeToolCall("call_l", "leak", "{}"));

        var turn = await client.ChatAsync(conversation, $"{marker} try it");

        // A result marked isError: its text used to go on as the server wrote it (a JSON-RPC error's was scrubbed).
        var call = Assert.Single(turn.ToolCalls);
        Assert.True(call.Failed);
        Assert.StartsWith("The tool reported an error: tool broke Bearer ", call.Result, StringComparison.Ordinal);
        const string token = "abcdefghijklmnopqrstuvwxyz123456";
        Assert.DoesNotContain(token, call.Result, StringComparison.Ordinal);
        var sent = app.Model.Requests.Where(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).Select(r => r.Body.ToJsonString());
        Assert.All(sent, body => Assert.DoesNotContain(token, body, StringComparison.Ordinal));
        Assert.All(await client.MessagesAsync(conversation), m => Assert.DoesNotContain(token, m.Content, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_tool_result_that_echoes_the_servers_secret_headers_reaches_the_model_and_the_conversation_without_them()
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        const string key = "wk+9f3c2a7e1d5b<6"; // no shape the general scrubbing knows; JSON escapes '+' and '<'
        const string bearer = "Bearer tok-7d1e4c9a2f6b";
        (await client.PostJson("/api/mcp-servers", new
        {
            name = "echo", transport = "streamable-http", url = app.Mcp.UnrulyUrl("echo-headers"),
            headers = new Dictionary<string, string> { ["X-Client"] = "tests" },
            secretHeaders = new Dictionary<string, string> { ["X-Api-Key"] = key, ["Authorization"] = bearer },
        })).EnsureSuccessStatusCode();
        // The model repeats what the tool said, as models do.
        app.Model.Responder = Answer(marker, request => request.Messages.Any(m => m?["role"]?.ToString() == "tool")
            ? FakeReply.Text("The tool said: " + request.Messages.Last(m => m?["role"]?.ToString() == "tool")!["content"])
            : FakeReply.Calls(new FakeToolCall("call_h", "headers", "{}")), app.Model.Responder);

        var response = await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} which headers?" });
        var body = await response.Content.ReadAsStringAsync();
        var turn = await response.ReadAs<ChatTurnDto>(HttpStatusCode.OK);

        // A successful result went on as the server wrote it (only results marked isError were scrubbed).
        var call = Assert.Single(turn.ToolCalls);
        Assert.False(call.Failed);
        Assert.Contains("X-Client: tests", call.Result, StringComparison.Ordinal); // the rest of the result is kept
        Assert.Contains("X-Api-Key: ***", call.Result, StringComparison.Ordinal);
        string[] leaks = [key, "wk\\u002B9f3c2a7e1d5b", "tok-7d1e4c9a2f6b"];
        foreach (var leak in leaks)
        {
            Assert.DoesNotContain(leak, body, StringComparison.OrdinalIgnoreCase);
            Assert.All(app.Model.Requests.Where(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)),
                r => Assert.DoesNotContain(leak, r.Body.ToJsonString(), StringComparison.OrdinalIgnoreCase));
            Assert.All(await client.MessagesAsync(conversation), m => Assert.DoesNotContain(leak, m.Content, StringComparison.OrdinalIgnoreCase));
        }
    }

    [Fact]
    public async Task A_bearer_token_a_server_repeats_without_its_scheme_reaches_neither_the_model_nor_the_answer_nor_the_conversation()
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        await McpServerTests.AddTokenServerAsync(client, app, "token", "token");
        // The model repeats what the tools said, as models do.
        app.Model.Responder = Answer(marker, request => request.Messages.Any(m => m?["role"]?.ToString() == "tool")
            ? FakeReply.Text("The tools said: " + string.Join(" / ", request.Messages.Where(m => m?["role"]?.ToString() == "tool").Select(m => m!["content"])))
            : FakeReply.Calls(new FakeToolCall("call_w", "whoami", "{}"), new FakeToolCall("call_e", "expired", "{}")), app.Model.Responder);

        var response = await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} who am I?" });
        var body = await response.Content.ReadAsStringAsync();
        var turn = await response.ReadAs<ChatTurnDto>(HttpStatusCode.OK);

        // A result ("authenticated with token ..."), a JSON-RPC error ("Token ... has expired") and the description of whoami
        // (which shows the Authorization header, offered to the model) each carried the bare token.
        Assert.Equal("authenticated with token ***", turn.ToolCalls[0].Result);
        Assert.EndsWith("Token *** has expired", turn.ToolCalls[1].Result, StringComparison.Ordinal);
        Assert.DoesNotContain(McpServerTests.BareToken, body, StringComparison.Ordinal);
        var sent = app.Model.Requests.Where(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).ToList();
        Assert.Contains(sent, r => r.ToolNames.Contains("whoami"));
        Assert.All(sent, r => Assert.DoesNotContain(McpServerTests.BareToken, r.Body.ToJsonString(), StringComparison.Ordinal));
        Assert.All(await client.MessagesAsync(conversation), m => Assert.DoesNotContain(McpServerTests.BareToken, m.Content, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_server_left_out_for_a_handshake_error_that_names_its_bearer_token_is_logged_without_the_token()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var name = "refusing-" + Marker();
        await McpServerTests.AddTokenServerAsync(client, app, name, "token-refused");

        await client.ChatAsync(conversation, $"{Marker()} hello");

        var line = await Eventually.Until(() => Task.FromResult(app.Logs.Lines.FirstOrDefault(l => l.Contains($"MCP server {name} is left out", StringComparison.Ordinal))),
            l => l is not null, what: "No line about the server left out");
        Assert.Contains("Token *** has expired", line, StringComparison.Ordinal);
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(McpServerTests.BareToken, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_server_left_out_for_an_error_that_repeats_its_secret_is_logged_without_the_secret()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        const string secret = "wkspc4e1f9a2b7c3d55"; // no shape the general scrubbing knows (not sk-..., Bearer ..., key=...)
        var name = "echo-" + Marker();
        (await client.PostJson("/api/mcp-servers", new
        {
            name, transport = "streamable-http", url = app.Mcp.UnrulyUrl("echo-key"),
            secretHeaders = new Dictionary<string, string> { ["X-Api-Key"] = secret },
        })).EnsureSuccessStatusCode();

        // Never tested, so the turn lists its tools first; the listing fails and the server is left out of the turn.
        var turn = await client.ChatAsync(conversation, $"{Marker()} hello");

        Assert.Empty(turn.ToolCalls);
        var line = await Eventually.Until(() => Task.FromResult(app.Logs.Lines.FirstOrDefault(l => l.Contains($"MCP server {name} is left out", StringComparison.Ordinal))),
            l => l is not null, what: "No line about the server left out");
        Assert.Contains("unknown workspace key", line, StringComparison.Ordinal);
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(secret, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_tool_server_whose_secret_no_longer_decrypts_fails_its_calls_and_not_the_stored_turn()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "vault", transport = "streamable-http", url = app.Mcp.SecuredUrl,
            secretHeaders = new Dictionary<string, string> { ["X-Api-Key"] = ProvidersApp.McpApiKey },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        Assert.True((await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK)).Success);

        // As after the encryption keys changed without the old ones: the stored header no longer decrypts.
        var store = app.Host.Services.GetRequiredService<Marten.IDocumentStore>();
        await using (var session = store.LightweightSession(user))
        {
            var stored = (await session.LoadAsync<ModularChat.Providers.Domain.McpServerConnection>(server.Id))!;
            var cipher = stored.SecretHeaders["X-Api-Key"].Cipher.ToCharArray();
            cipher[^8] = cipher[^8] == 'A' ? 'B' : 'A';
            stored.SecretHeaders["X-Api-Key"].Cipher = new string(cipher);
            session.Store(stored);
            await session.SaveChangesAsync();
        }

        try
        {
            var marker = Marker();
            app.Model.Responder = CallsThenAnswer(marker, "no vault today", app.Model.Responder, new FakeToolCall("call_v", "add", """{"a":1,"b":2}"""));

            var turn = await client.ChatAsync(conversation, $"{marker} add them");

            var call = Assert.Single(turn.ToolCalls);
            Assert.True(call.Failed);
            Assert.Equal("no vault today", turn.Answer.Content);
            Assert.Contains(await client.MessagesAsync(conversation), m => m.Content == "no vault today");
        }
        finally
        {
            // A secret no key can read would count as unreadable in every later key rotation of the shared database.
            Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/mcp-servers/{server.Id}")).StatusCode);
        }
    }

    [Fact]
    public async Task Blank_tool_results_a_blank_answer_and_oversized_arguments_are_stored_without_refusing_the_turn()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        var longText = new string('x', 25_000); // its call's JSON is longer than Chat:MaxStoredToolResultLength (20,000)
        app.Model.Responder = CallsThenAnswer(marker, "\u0000", app.Model.Responder,
            new FakeToolCall("call_blank", "echo", """{"text":" "}"""),
            new FakeToolCall("call_nul", "echo", """{"text":"\u0000"}"""),
            new FakeToolCall("call_long", "echo", $$"""{"text":"{{longText}}"}"""));

        var turn = await client.ChatAsync(conversation, $"{marker} echo nothing");

        // Before: a tool message of white space (or of NULs, stored without them) was refused as empty content, and the whole
        // turn with it (a 400 naming messages[k].content, nothing after the user's message stored, the answer lost).
        Assert.Equal("(the model returned no text)", turn.Answer.Content);
        Assert.Equal(["(empty result)", "(empty result)", new string('x', 20_000)], turn.ToolCalls.Select(c => c.Result));
        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "tool", "tool", "tool", "tool", "tool", "tool", "assistant"], messages.Select(m => m.Role));
        var longCall = messages.Single(m => m.Metadata?.GetValueOrDefault("callId") == "call_long" && m.Metadata["kind"] == "tool_call");
        Assert.Equal("true", longCall.Metadata!["truncated"]);
        Assert.DoesNotContain(longText, longCall.Content, StringComparison.Ordinal);
        Assert.Equal("(the model returned no text)", messages[^1].Content);
    }

    [Fact]
    public async Task A_tool_result_stored_cut_is_marked_and_not_cut_inside_a_character()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        // An emoji (two UTF-16 units) across Chat:MaxStoredToolResultLength (20,000): cut between its halves, it was stored as U+FFFD.
        var text = new string('x', 19_999) + "\U0001F600" + new string('y', 100);
        app.Model.Responder = CallsThenAnswer(marker, "Echoed.", app.Model.Responder, new FakeToolCall("call_emoji", "echo", JsonSerializer.Serialize(new { text })));

        var turn = await client.ChatAsync(conversation, $"{marker} echo it");

        Assert.Equal(new string('x', 19_999), Assert.Single(turn.ToolCalls).Result);
        var stored = (await client.MessagesAsync(conversation)).Single(m => m.Metadata?.GetValueOrDefault("kind") == "tool_result");
        Assert.Equal(new string('x', 19_999), stored.Content);
        Assert.Equal("true", stored.Metadata!["truncated"]);
        Assert.Equal("20101", stored.Metadata["resultLength"]);
    }

    [Fact]
    public async Task A_tool_result_larger_than_a_response_may_be_fails_the_call_and_not_the_turn()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        await client.AddMcpServerAsync("flood", app.Mcp.UnrulyUrl("flood-call"));
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "too much", app.Model.Responder, new FakeToolCall("call_f", "flood", "{}"));

        var turn = await client.ChatAsync(conversation, $"{marker} flood me");

        // 9 MiB against OutboundNetwork:MaxResponseBytes = 8 MiB: never read into memory whole, nor stored, nor sent on; the
        // model is told which limit the answer passed.
        var call = Assert.Single(turn.ToolCalls);
        Assert.True(call.Failed);
        Assert.True(call.Result.Length < 300, call.Result);
        Assert.Contains("is larger than 8,388,608 bytes (OutboundNetwork:MaxResponseBytes)", call.Result, StringComparison.Ordinal);
        Assert.Equal("too much", turn.Answer.Content);
    }

    [Fact]
    public async Task A_tool_that_does_not_answer_in_time_is_reported_to_the_model_and_marked_failed()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        await client.AddMcpServerAsync("sleepy", app.Mcp.UnrulyUrl("hang"));
        using var _ = app.ShortMcpTimeouts();
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "it slept", app.Model.Responder, new FakeToolCall("call_s", "sleepy", "{}"));

        var turn = await client.ChatAsync(conversation, $"{marker} wake it");

        var call = Assert.Single(turn.ToolCalls);
        Assert.True(call.Failed);
        Assert.Equal("The tool sleepy did not answer within 3 s.", call.Result); // Mcp:ToolCallTimeout under ShortMcpTimeouts
        Assert.Equal("it slept", turn.Answer.Content);
    }

    [Fact]
    public async Task A_tool_calls_deadline_runs_on_the_clock_the_host_gives_it()
    {
        // A clock of the test's own for the chat turns, whose tool calls take it: Mcp:ToolCallTimeout passes when it says so, not
        // ten minutes later (the tool holds its answer for two).
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var node = await app.StartHostAsync(
            new Dictionary<string, string?> { ["Mcp:ToolCallTimeout"] = "00:10:00", ["Chat:TurnTimeout"] = "01:00:00" },
            services => services.AddScoped(sp => ActivatorUtilities.CreateInstance<ChatTurns>(sp, (TimeProvider)clock)));
        using var client = ClientOn(node);
        var conversation = await app.StartWithCalculatorAsync(client);
        var key = Marker();
        await client.AddMcpServerAsync("held", app.Mcp.UnrulyUrl("held-" + key));
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "it slept", app.Model.Responder, new FakeToolCall("call_h", "held", "{}"));

        var turn = client.ChatAsync(conversation, $"{marker} wake it");
        await UnrulyMcpServer.Held(key).WaitAsync(TimeSpan.FromSeconds(60));
        clock.Advance(TimeSpan.FromMinutes(10));
        // Bounded below the two minutes the tool holds its answer: on the wall clock the call would still be waiting.
        var answered = await turn.WaitAsync(TimeSpan.FromSeconds(60));

        var call = Assert.Single(answered.ToolCalls);
        Assert.True(call.Failed);
        Assert.Equal("The tool held did not answer within 600 s.", call.Result);
        Assert.Equal("it slept", answered.Answer.Content);
    }

    [Fact]
    public async Task A_tool_whose_server_drops_the_connection_tells_the_model_which_server_failed_and_the_turn_is_answered()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var name = "fragile-" + Marker();
        await client.AddMcpServerAsync(name, app.Mcp.UnrulyUrl("drop"));
        var marker = Marker();
        // The model tries again, round after round, more often than the client allows errors in a row (3).
        app.Model.Responder = Answer(marker, request => request.Messages.Count(m => m?["role"]?.ToString() == "tool") < 4
            ? FakeReply.Calls(new FakeToolCall("call_" + request.Messages.Count, "fragile", "{}"))
            : FakeReply.Text("it keeps failing"), app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{marker} try hard");

        // It used to answer 502 "The model provider could not be reached." (each call an exception, "Function failed" to the model).
        Assert.Equal("it keeps failing", turn.Answer.Content);
        Assert.Equal(4, turn.ToolCalls.Count);
        Assert.All(turn.ToolCalls, call =>
        {
            Assert.True(call.Failed);
            Assert.StartsWith($"The tool fragile of MCP server '{name}' could not be called: ", call.Result, StringComparison.Ordinal);
        });
        var sent = app.Model.Requests.Last(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).Messages;
        Assert.Equal(turn.ToolCalls.Select(c => c.Result), sent.Where(m => m?["role"]?.ToString() == "tool").Select(m => m!["content"]!.ToString()));
        Assert.Contains(app.Logs.Lines, l => l.Contains($"MCP server {name}'s tool fragile could not be called", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Tool_failures_name_the_server_by_its_name_only_and_a_servers_error_comes_without_the_clients_prefix()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        await client.AddMcpServerAsync("dropping", app.Mcp.UnrulyUrl("drop"));
        await client.AddMcpServerAsync("exploding", app.Mcp.UnrulyUrl("error"));
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "both failed", app.Model.Responder,
            new FakeToolCall("c1", "fragile", "{}"), new FakeToolCall("c2", "explode", """{"text":"now"}"""));

        var turn = await client.ChatAsync(conversation, $"{marker} try both");

        // The server's JSON-RPC error came as "Request failed (remote): explode exploded: ...", and the lost connection was
        // told with the server's URL.
        Assert.Equal("The tool reported an error: explode exploded: the disk is full", turn.ToolCalls.Single(c => c.Tool == "explode").Result);
        var dropped = turn.ToolCalls.Single(c => c.Tool == "fragile").Result;
        Assert.StartsWith("The tool fragile of MCP server 'dropping' could not be called: ", dropped, StringComparison.Ordinal);
        var sent = app.Model.Requests.Last(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).Messages
            .Where(m => m?["role"]?.ToString() == "tool").Select(m => m!["content"]!.ToString()).ToList();
        var stored = (await client.MessagesAsync(conversation)).Where(m => m.Metadata?.GetValueOrDefault("kind") == "tool_result").Select(m => m.Content).ToList();
        Assert.Equal(2, sent.Count);
        Assert.Equal(2, stored.Count);
        var server = new Uri(app.Mcp.UnrulyUrl("drop"));
        foreach (var text in sent.Concat(stored))
        {
            Assert.DoesNotContain("Request failed", text, StringComparison.Ordinal);
            Assert.DoesNotContain(server.Authority, text, StringComparison.Ordinal);
            Assert.DoesNotContain("/unruly/", text, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_stdio_program_that_dies_during_a_turn_is_started_again_for_the_next_call()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        await (await client.PostJson("/api/mcp-servers", new
        {
            name = "mortal", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, request => request.Messages.Count(m => m?["role"]?.ToString() == "tool") switch
        {
            0 => FakeReply.Calls(new FakeToolCall("c1", "crash", "{}")),
            1 => FakeReply.Calls(new FakeToolCall("c2", "add", """{"a":2,"b":3}""")),
            _ => FakeReply.Text("done"),
        }, app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{marker} crash, then add");

        var (crash, add) = (turn.ToolCalls[0], turn.ToolCalls[1]);
        // The next call used to go to the dead program's connection ("Function failed").
        Assert.Equal(("5", false), (add.Result, add.Failed));
        Assert.True(crash.Failed);
        Assert.StartsWith("The tool crash of MCP server 'mortal' could not be called: ", crash.Result, StringComparison.Ordinal);
        Assert.Equal("done", turn.Answer.Content);
    }

    [Fact]
    public async Task A_streamable_http_server_that_restarts_during_a_turn_gets_a_new_session_at_the_next_call_and_the_next_turn()
    {
        await using var server = await RestartableMcpServer.StartAsync();
        var (client, conversation, marker) = await WithRestartableAsync(server, toolResults => toolResults switch
        {
            0 => FakeReply.Calls(new FakeToolCall("c1", "add", """{"a":2,"b":3}""")),
            1 => Restarted(server, FakeReply.Calls(new FakeToolCall("c2", "add", """{"a":4,"b":5}"""))),
            2 => FakeReply.Calls(new FakeToolCall("c3", "add", """{"a":6,"b":7}""")),
            _ => FakeReply.Text("done"),
        });
        using var _ = client;

        var turn = await client.ChatAsync(conversation, $"{marker} add thrice");

        // The server forgot the session between the first and the second call: the second fails, saying so; the third
        // is made in a new session.
        Assert.Equal(["5", "13"], new[] { turn.ToolCalls[0], turn.ToolCalls[2] }.Select(c => c.Result));
        var lost = turn.ToolCalls[1];
        Assert.True(lost.Failed);
        Assert.StartsWith("The tool add of MCP server 'restartable' could not be called: ", lost.Result, StringComparison.Ordinal);
        Assert.Contains("no longer knows this session", lost.Result, StringComparison.Ordinal);
        Assert.False(turn.ToolCalls[2].Failed);

        // And a later turn, after another restart, works from its first call.
        await server.RestartAsync();
        var next = Marker();
        app.Model.Responder = CallsThenAnswer(next, "added", app.Model.Responder, new FakeToolCall("c4", "add", """{"a":1,"b":1}"""));
        var later = await client.ChatAsync(await client.StartConversationAsync(), $"{next} add once"); // no replayed tool results
        Assert.Equal(("2", false), (Assert.Single(later.ToolCalls).Result, later.ToolCalls[0].Failed));
    }

    [Fact]
    public async Task A_call_whose_connection_drops_mid_request_fails_and_the_next_call_opens_a_new_session()
    {
        await using var server = await RestartableMcpServer.StartAsync();
        var (client, conversation, marker) = await WithRestartableAsync(server, toolResults => toolResults switch
        {
            0 => FakeReply.Calls(new FakeToolCall("c1", "restart", "{}")),
            1 => After(server.Restarted, FakeReply.Calls(new FakeToolCall("c2", "add", """{"a":4,"b":5}"""))),
            _ => FakeReply.Text("done"),
        });
        using var _ = client;

        var turn = await client.ChatAsync(conversation, $"{marker} restart, then add");

        // The call in flight when the server restarted fails; the next one used to be sent in the old session (404).
        var (cut, add) = (turn.ToolCalls[0], turn.ToolCalls[1]);
        Assert.True(cut.Failed);
        Assert.StartsWith("The tool restart of MCP server 'restartable' could not be called: ", cut.Result, StringComparison.Ordinal);
        Assert.Equal(("9", false), (add.Result, add.Failed));
    }

    /// <summary>
    /// A client of a new tenant with the fake model and <paramref name="server"/> (as 'restartable'), a conversation, and a
    /// marker whose requests the model answers by how many tool results they hold, with <paramref name="round"/>.
    /// </summary>
    private async Task<(HttpClient Client, Guid Conversation, string Marker)> WithRestartableAsync(RestartableMcpServer server, Func<int, FakeReply> round)
    {
        var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        await client.AddMcpServerAsync("restartable", server.Url);
        var marker = Marker();
        app.Model.Responder = Answer(marker, request => round(request.Messages.Count(m => m?["role"]?.ToString() == "tool")), app.Model.Responder);
        return (client, await client.StartConversationAsync(), marker);
    }

    /// <summary><paramref name="reply"/>, once <paramref name="server"/> has restarted (the model answers meanwhile).</summary>
    private static FakeReply Restarted(RestartableMcpServer server, FakeReply reply) => After(server.RestartAsync(), reply);

    /// <summary><paramref name="reply"/>, once <paramref name="done"/> is (the model answers meanwhile).</summary>
    private static FakeReply After(Task done, FakeReply reply)
    {
        done.GetAwaiter().GetResult();
        return reply;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_call_whose_arguments_are_not_json_is_not_made_and_the_model_is_told_and_the_call_stored_as_failed(bool streamed)
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        await client.AddMcpServerAsync("recording", app.Mcp.UnrulyUrl("recording-" + marker));
        app.Model.Responder = CallsThenAnswer(marker, "bad arguments", app.Model.Responder, new FakeToolCall("call_j", "echo", "this is {not json"));

        var turn = await TurnWithOneFailedToolCallAsync(client, conversation, $"{marker} echo", streamed);

        // The tool used to be called with no arguments ({}), and the call reported and stored as one that did not fail.
        Assert.Empty(UnrulyMcpServer.CallsReceived(marker));
        var call = Assert.Single(turn.ToolCalls);
        Assert.True(call.Failed);
        Assert.Equal("The arguments of this call of the tool 'echo' are not a valid JSON object, so the tool was not called. " +
            "Call it again with its arguments as a JSON object.", call.Result);
        var sent = app.Model.Requests.Last(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).Messages;
        Assert.Contains(sent, m => m?["role"]?.ToString() == "tool" && m["content"]!.ToString() == call.Result);
        var result = (await client.MessagesAsync(conversation)).Single(m => m.Metadata?.GetValueOrDefault("kind") == "tool_result");
        Assert.Equal(("true", call.Result), (result.Metadata!["failed"], result.Content));
        Assert.Equal("bad arguments", turn.Answer.Content);
    }

    [Fact]
    public async Task Servers_never_listed_are_listed_at_once_and_those_that_do_not_answer_are_left_out_for_a_while()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        using var first = SilentServer.Start();
        using var second = SilentServer.Start();
        using var _ = app.ShortMcpTimeouts();
        await client.AddMcpServerAsync("silent-1", first.Url);
        await client.AddMcpServerAsync("silent-2", second.Url);
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "5", app.Model.Responder, new FakeToolCall("call_1", "add", """{"a":2,"b":3}"""));

        var turn = await client.ChatAsync(conversation, $"{marker} add");

        // Each silent server holds its listing for Mcp:ConnectTimeout (3 s here). One after the other, the second would
        // have been reached only when the first had timed out, and every turn would wait for the sum.
        Assert.Equal("5", turn.ToolCalls.Single().Result);
        // Listed together: each was reached before the turn gave up on either (listed one after the other, the second would
        // have been reached only once the first's connection was closed at its timeout).
        Assert.NotNull(first.FirstAccepted);
        Assert.NotNull(second.FirstAccepted);
        var lastReached = Math.Max(first.FirstAccepted.Value, second.FirstAccepted.Value);
        var firstGivenUp = Math.Min(first.FirstClosed ?? long.MaxValue, second.FirstClosed ?? long.MaxValue);
        Assert.True(lastReached < firstGivenUp, "the silent servers were listed one after the other");
        Assert.Equal(["add", "echo", "fail"], app.Model.Requests.First(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).ToolNames.Order());

        // The failure is remembered (Mcp:UnreachableRetryAfter): the next turn does not wait for them again.
        var servers = await (await client.GetAsync("/api/mcp-servers")).ReadAs<List<McpServerDto>>(HttpStatusCode.OK);
        Assert.All(servers.Where(s => s.Name.StartsWith("silent", StringComparison.Ordinal)), s => Assert.NotNull(s.ListingFailedAt));
        var accepted = (first.Accepted, second.Accepted);
        await client.ChatAsync(conversation, "and again?");
        Assert.Equal(accepted, (first.Accepted, second.Accepted));
    }

    [Fact]
    public async Task A_turn_offers_the_model_at_most_the_configured_number_of_tools()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client); // 3 tools
        await client.AddMcpServerAsync("many", app.Mcp.UnrulyUrl("many")); // 128 kept of its 300
        var marker = Marker();

        await client.ChatAsync(conversation, $"{marker} which tools do you have?");

        var offered = app.Model.Requests.Single(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).ToolNames;
        Assert.Equal(128, offered.Count); // Mcp:MaxToolsPerTurn, of 131
        Assert.Equal(offered.Count, offered.Distinct().Count());
    }

    [Fact]
    public async Task NUL_characters_from_the_model_are_left_out_of_what_the_turn_stores()
    {
        // PostgreSQL stores no NUL character: the model's text cannot fail the turn with it (a client's own text is refused).
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        app.Model.Responder = Answer(marker, request => request.Messages.Any(m => m?["role"]?.ToString() == "tool")
            ? FakeReply.Text("2 + 3\0 = 5")
            : FakeReply.Calls(new FakeToolCall("call\0_1", "add", """{"a":2,"b":3}""")), app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{marker} what is 2 + 3?");

        Assert.Equal("2 + 3 = 5", turn.Answer.Content);
        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "tool", "tool", "assistant"], messages.Select(m => m.Role));
        Assert.Equal(("call_1", "call_1"), (messages[1].Metadata!["callId"], messages[2].Metadata!["callId"]));
        Assert.Equal("5", messages[2].Content);
        Assert.Equal("2 + 3 = 5", messages[3].Content);
    }

    [Fact]
    public async Task Several_tool_calls_in_one_round_store_every_result_as_its_own_message()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "5 and 9", app.Model.Responder,
            new FakeToolCall("call_a", "add", """{"a":2,"b":3}"""), new FakeToolCall("call_b", "add", """{"a":4,"b":5}"""));

        var turn = await client.ChatAsync(conversation, $"{marker} 2 + 3 and 4 + 5?");

        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "tool", "tool", "tool", "tool", "assistant"], messages.Select(m => m.Role));
        Assert.Equal(["tool_call", "tool_call", "tool_result", "tool_result"], messages[1..5].Select(m => m.Metadata!["kind"]));
        Assert.Equal(["call_a", "call_b", "call_a", "call_b"], messages[1..5].Select(m => m.Metadata!["callId"]));
        Assert.Equal(["5", "9"], messages[3..5].Select(m => m.Content));
        Assert.Equal([4L, 5L], turn.ToolCalls.Select(c => c.ResultSequence));
    }

    [Theory]
    [InlineData("1")]
    [InlineData("2")]
    public async Task A_batch_too_small_for_one_tool_call_refuses_the_start_naming_both_settings(string batch)
    {
        // Chat:MaxToolCalls is taken as at most (Conversations:MaxBatchSize - 1) / 2: 0 here. The start was refused naming only
        // Chat:MaxToolCalls, "You entered 0", a value nobody had set.
        var error = await Assert.ThrowsAnyAsync<Exception>(() => app.StartHostAsync(new Dictionary<string, string?> { ["Conversations:MaxBatchSize"] = batch }));

        Assert.Contains(Exceptions.Flatten(error), e => e is Microsoft.Extensions.Options.OptionsValidationException
            && e.Message.Contains($"Configuration 'Conversations:MaxBatchSize' must be at least 3 for chat to run a tool (was {batch})", StringComparison.Ordinal)
            && e.Message.Contains("Chat:MaxToolCalls", StringComparison.Ordinal));
        Assert.DoesNotContain(Exceptions.Flatten(error), e => e.Message.Contains("'Max Tool Calls' must be between", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Tool_calls_beyond_the_turns_limit_are_not_run_the_model_is_told_and_the_turn_is_stored()
    {
        // A batch of 41 messages: a turn may run (41 - 1) / 2 = 20 calls (Chat:MaxToolCalls, 64, is taken as that).
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Conversations:MaxBatchSize"] = "41" });
        using var client = ClientOn(node);
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        var calls = Enumerable.Range(1, 30).Select(i => new FakeToolCall($"call_{i}", "add", $$"""{"a":{{i}},"b":1000}""")).ToArray();
        app.Model.Responder = CallsThenAnswer(marker, "Done adding.", app.Model.Responder, calls);

        var turn = await client.ChatAsync(conversation, $"{marker} add them all");

        // It used to run all 30, then refuse to store the 61 messages of the turn (422): the answer and the results lost.
        Assert.Equal("Done adding.", turn.Answer.Content);
        Assert.Equal(Enumerable.Range(1, 20).Select(i => $"call_{i}"), turn.ToolCalls.Select(c => c.CallId));
        Assert.Equal(Enumerable.Range(1, 20).Select(i => (i + 1000).ToString(System.Globalization.CultureInfo.InvariantCulture)), turn.ToolCalls.Select(c => c.Result));
        var results = app.Model.Requests.Last(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal) && r.Messages.Any(m => m?["role"]?.ToString() == "tool")).Messages
            .Where(m => m!["role"]!.ToString() == "tool").Select(m => (Id: m!["tool_call_id"]!.ToString(), Content: m["content"]!.ToString())).ToList();
        Assert.Equal(calls.Select(c => c.Id), results.Select(r => r.Id)); // every call answered, as the provider requires
        Assert.All(results.Skip(20), r => Assert.Contains("Not called: at most 20 tool calls per turn", r.Content, StringComparison.Ordinal));
        Assert.DoesNotContain(results.Take(20), r => r.Content.Contains("Not called", StringComparison.Ordinal));
        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(1 + 40 + 1, messages.Count);
        Assert.Equal("10", messages[^1].Metadata!["toolCallsNotRun"]);
    }

    /// <summary>
    /// A host that allows one round of tool calls (<c>Chat:MaxToolRounds</c> 1), a client of a new tenant, a conversation
    /// with the calculator, and a model that asks for a call in every round of a message that holds the marker, the last
    /// round (which runs no tools) too.
    /// </summary>
    private async Task<OneToolRound> OneToolRoundAsync()
    {
        var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Chat:MaxToolRounds"] = "1" });
        var client = ClientOn(node);
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        app.Model.Responder = Answer(marker, r => FakeReply.Calls(new FakeToolCall($"call_{r.Messages.Count}", "add", """{"a":1,"b":2}""")), app.Model.Responder);
        return new OneToolRound(node, client, conversation, marker);
    }

    private sealed record OneToolRound(Alba.IAlbaHost Node, HttpClient Client, Guid Conversation, string Marker) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            Client.Dispose();
            await Node.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_tool_call_the_model_asks_after_its_last_tool_round_is_neither_run_nor_stored_without_a_result()
    {
        await using var round = await OneToolRoundAsync();
        var (client, conversation, marker) = (round.Client, round.Conversation, round.Marker);

        var turn = await client.ChatAsync(conversation, $"{marker} add forever");

        // The last call used to be stored as a tool_call that no result answers.
        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "tool", "tool", "assistant"], messages.Select(m => m.Role));
        Assert.Equal(["tool_call", "tool_result"], messages[1..3].Select(m => m.Metadata!["kind"]));
        Assert.Equal("1", messages[^1].Metadata!["toolCallsNotRun"]);
        Assert.Equal("3", Assert.Single(turn.ToolCalls).Result);
    }

    [Fact]
    public async Task Streamed_calls_of_the_last_round_say_they_are_not_run_and_why_as_they_stream()
    {
        await using var round = await OneToolRoundAsync();
        var (client, conversation, marker) = (round.Client, round.Conversation, round.Marker);

        var (events, turn) = await StreamedTurnAsync(client, conversation, $"{marker} add forever");

        // The last round's call used to stream with run true, and no tool-result ever came for it.
        const string lastRound = "Not called: the turn's last round runs no tools (at most 1 round of tool calls per turn, Chat:MaxToolRounds).";
        (string Name, bool Run, string? Reason, bool Stored) Said((string Name, JsonElement Data) e)
            => (e.Name, e.Data.GetProperty("run").GetBoolean(), e.Data.GetProperty("notRunReason").GetString(), e.Data.GetProperty("stored").GetBoolean());
        Assert.Equal([("tool-call", true, null, true), ("tool-result", true, null, true), ("tool-call", false, lastRound, false)],
            events.Where(e => e.Name is "tool-call" or "tool-result").Select(Said));
        Assert.Equal("3", Assert.Single(turn.ToolCalls).Result);
        Assert.Equal("1", (await client.MessagesAsync(conversation))[^1].Metadata!["toolCallsNotRun"]);
    }

    [Fact]
    public async Task A_call_id_that_comes_back_in_a_later_round_is_paired_with_its_own_result()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        // A provider that numbers its calls per round: both rounds call "call_1".
        app.Model.Responder = Answer(marker, request => request.Messages.Count(m => m?["role"]?.ToString() == "tool") switch
        {
            0 => FakeReply.Calls([new FakeToolCall("call_1", "add", """{"a":2,"b":3}""")]),
            1 => FakeReply.Calls([new FakeToolCall("call_1", "add", """{"a":4,"b":5}""")]),
            _ => FakeReply.Text("5, then 9"),
        }, app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{marker} 2 + 3, then 4 + 5?");

        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "tool", "tool", "tool", "tool", "assistant"], messages.Select(m => m.Role));
        Assert.Equal([("5", 2L, 3L), ("9", 4L, 5L)], turn.ToolCalls.Select(c => (c.Result, c.CallSequence, c.ResultSequence)));
        Assert.Equal(["5", "9"], [messages[2].Content, messages[4].Content]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Two_calls_of_one_round_with_the_same_id_each_get_an_id_of_their_own_and_their_own_result(bool streamed)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "5 and 9", app.Model.Responder,
            new FakeToolCall("dup", "add", """{"a":2,"b":3}"""), new FakeToolCall("dup", "add", """{"a":4,"b":5}"""));

        var turn = streamed
            ? (await StreamedTurnAsync(client, conversation, $"{marker} 2 + 3 and 4 + 5?")).Turn
            : await client.ChatAsync(conversation, $"{marker} 2 + 3 and 4 + 5?");

        // Each result used to be paired with the other call (the latest unanswered one with its id): 2 + 3 reported and
        // stored with 9, 4 + 5 with 5.
        Assert.Equal([("dup", 2, "5"), ("dup_2", 4, "9")],
            turn.ToolCalls.Select(c => (c.CallId, JsonDocument.Parse(c.Arguments).RootElement.GetProperty("a").GetInt32(), c.Result)));
        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["dup", "dup_2", "dup", "dup_2"], messages[1..5].Select(m => m.Metadata!["callId"]));
        Assert.Equal(["5", "9"], messages[3..5].Select(m => m.Content));
        // The model is given the calls under their ids, each answered once.
        var sent = app.Model.Requests.Last(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).Messages;
        Assert.Equal(["dup", "dup_2"], sent.Single(m => m?["tool_calls"] is not null)!["tool_calls"]!.AsArray().Select(c => c!["id"]!.ToString()));
        Assert.Equal([("dup", "5"), ("dup_2", "9")], sent.Where(m => m?["role"]?.ToString() == "tool")
            .Select(m => (m!["tool_call_id"]!.ToString(), m["content"]!.ToString())));
    }

    [Fact]
    public async Task Streamed_calls_that_are_not_run_say_so_and_why_as_the_stored_turn_does()
    {
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Chat:MaxToolCalls"] = "2" });
        using var client = ClientOn(node);
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "done", app.Model.Responder,
            new FakeToolCall("c1", "add", """{"a":2,"b":3}"""), new FakeToolCall("c2", "echo", "this is {not json"), new FakeToolCall("c3", "add", """{"a":1,"b":1}"""));

        var (events, turn) = await StreamedTurnAsync(client, conversation, $"{marker} three calls");

        // They used to stream as ordinary calls: c2 with an ordinary tool-call event, c3 as if it had run and been stored.
        const string notJson = "The arguments of this call of the tool 'echo' are not a valid JSON object, so the tool was not called. " +
            "Call it again with its arguments as a JSON object.";
        const string beyond = "Not called: at most 2 tool calls per turn. Answer with what the tools have returned so far.";
        (string Id, bool Run, string? Reason, bool Stored) Said(JsonElement e)
            => (e.GetProperty("callId").GetString()!, e.GetProperty("run").GetBoolean(), e.GetProperty("notRunReason").GetString(), e.GetProperty("stored").GetBoolean());
        Assert.Equal([("c1", true, null, true), ("c2", false, notJson, true), ("c3", false, beyond, false)],
            events.Where(e => e.Name == "tool-call").Select(e => Said(e.Data)));
        var results = events.Where(e => e.Name == "tool-result").ToList();
        Assert.Equal([("c1", true, null, true), ("c2", false, notJson, true), ("c3", false, beyond, false)], results.Select(e => Said(e.Data)));
        Assert.Equal([false, true, true], results.Select(e => e.Data.GetProperty("failed").GetBoolean()));
        // What is stored: c1, and c2 failed with the same words; c3 only counted.
        Assert.Equal([("c1", false, "5"), ("c2", true, notJson)], turn.ToolCalls.Select(c => (c.CallId, c.Failed, c.Result)));
        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(("true", notJson), (messages[4].Metadata!["failed"], messages[4].Content));
        Assert.Equal("1", messages[^1].Metadata!["toolCallsNotRun"]);
    }

    [Fact]
    public async Task A_stdio_tool_gets_its_own_environment_and_never_the_services()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        await (await client.PostJson("/api/mcp-servers", new
        {
            name = "local", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll },
            environment = new Dictionary<string, string> { ["GREETING"] = "hello from the tenant" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "done", app.Model.Responder,
            new FakeToolCall("c1", "get_env", """{"name":"GREETING"}"""),
            new FakeToolCall("c2", "get_env", """{"name":"ConnectionStrings__Postgres"}"""));

        var turn = await client.ChatAsync(conversation, $"{marker} env?");

        Assert.Equal(["hello from the tenant", "(unset)"], turn.ToolCalls.Select(c => c.Result));
    }

    [Fact]
    public async Task A_stdio_tool_runs_in_an_empty_directory_of_its_own_that_goes_when_it_ends()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        await (await client.PostJson("/api/mcp-servers", new
        {
            name = "local", transport = "stdio", command = ProvidersApp.Dotnet, arguments = new[] { ProvidersApp.StdioServerDll },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "done", app.Model.Responder, new FakeToolCall("c1", "get_cwd", "{}"));

        var turn = await client.ChatAsync(conversation, $"{marker} where?");

        // It used to run in the service's working directory, where its settings files are.
        var answer = Assert.Single(turn.ToolCalls).Result;
        Assert.EndsWith(" (0 entries)", answer, StringComparison.Ordinal);
        var directory = answer[..answer.LastIndexOf(" (", StringComparison.Ordinal)];
        Assert.NotEqual(Path.GetFullPath(Environment.CurrentDirectory), Path.GetFullPath(directory));
        Assert.StartsWith(Path.GetFullPath(Path.GetTempPath()), Path.GetFullPath(directory), StringComparison.Ordinal);
        await Eventually.Until(() => Task.FromResult(Directory.Exists(directory)), exists => !exists, seconds: 60,
            what: "The program's directory was not removed when its connection ended");
    }

    [Fact]
    public async Task A_streamed_answer_arrives_as_server_sent_events_and_is_stored_when_the_stream_ends()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => new FakeReply("One two three four.", PromptTokens: 11, CompletionTokens: 4), app.Model.Responder);

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat")
        {
            Content = JsonContent($"{marker} count"),
        };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = ParseEvents(await response.Content.ReadAsStringAsync());
        var deltas = events.Where(e => e.Name == "delta").Select(e => e.Data.GetProperty("text").GetString()).ToList();
        Assert.True(deltas.Count >= 4, "the answer should arrive in pieces");
        Assert.Equal("One two three four.", string.Concat(deltas));
        var done = events.Last();
        Assert.Equal("done", done.Name);
        Assert.Equal("One two three four.", done.Data.GetProperty("answer").GetProperty("content").GetString());
        Assert.Equal(11, done.Data.GetProperty("usage").GetProperty("inputTokens").GetInt64());

        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "assistant"], messages.Select(m => m.Role));
        Assert.Equal("One two three four.", messages[1].Content);
        Assert.Equal("4", messages[1].Metadata!["outputTokens"]);
    }

    [Fact]
    public async Task A_streamed_turn_with_a_tool_call_reports_the_call_and_its_result()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        await client.AddMcpServerAsync("echoes", app.Mcp.SseUrl, transport: "sse");
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "It said ping.", app.Model.Responder, new FakeToolCall("call_e", "echo", """{"text":"ping"}"""));

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} echo") };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var events = ParseEvents(await response.Content.ReadAsStringAsync());

        Assert.Equal(["tool-call", "tool-result"], events.Where(e => e.Name.StartsWith("tool", StringComparison.Ordinal)).Select(e => e.Name));
        Assert.Equal("echo", events.First(e => e.Name == "tool-call").Data.GetProperty("tool").GetString());
        Assert.Equal("It said ping.", events.Last().Data.GetProperty("answer").GetProperty("content").GetString());
        Assert.Equal(["user", "tool", "tool", "assistant"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task What_the_model_writes_before_its_tool_calls_is_part_of_the_answer_as_it_streamed(bool streamed)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        app.Model.Responder = Answer(marker, request => request.Messages.Any(m => m?["role"]?.ToString() == "tool")
            ? FakeReply.Text("It is 5.")
            : new FakeReply("Let me add that.", [new FakeToolCall("call_1", "add", """{"a":2,"b":3}""")]), app.Model.Responder);

        string answer;
        if (streamed)
        {
            var (events, turn) = await StreamedTurnAsync(client, conversation, $"{marker} 2 + 3?");
            // The deltas used to say "Let me add that.It is 5." and the answer only "It is 5.".
            Assert.Equal("Let me add that.\n\nIt is 5.", string.Concat(events.Where(e => e.Name == "delta").Select(e => e.Data.GetProperty("text").GetString())));
            answer = turn.Answer.Content;
        }
        else
        {
            answer = (await client.ChatAsync(conversation, $"{marker} 2 + 3?")).Answer.Content;
        }

        Assert.Equal("Let me add that.\n\nIt is 5.", answer);
        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "tool", "tool", "assistant"], messages.Select(m => m.Role));
        Assert.Equal("Let me add that.\n\nIt is 5.", messages[^1].Content);
    }

    [Fact]
    public async Task The_deltas_of_a_turn_whose_first_round_only_calls_a_tool_join_to_the_answer()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "It is 5.", app.Model.Responder, new FakeToolCall("call_1", "add", """{"a":2,"b":3}"""));

        var (events, turn) = await StreamedTurnAsync(client, conversation, $"{marker} 2 + 3?");

        // A blank line used to stream after the answer's first word ("It\n\n is 5."): the round that ended was taken to
        // end only when a separator was sent, and none is sent before the first text.
        Assert.Equal("It is 5.", string.Concat(events.Where(e => e.Name == "delta").Select(e => e.Data.GetProperty("text").GetString())));
        Assert.Equal("It is 5.", turn.Answer.Content);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_turn_whose_client_goes_away_while_the_model_answers_is_logged_as_cancelled_whichever_way_it_answers(bool streamed)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        var (asked, never) = HoldTheModel(marker);

        using var cancel = new CancellationTokenSource();
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} take your time") };
        if (streamed)
        {
            request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        }

        var sent = client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancel.Token);
        await asked.WaitAsync(TimeSpan.FromSeconds(30));
        await cancel.CancelAsync(); // the client goes away while the model is still answering
        try
        {
            (await sent).Dispose(); // whatever the test server makes of a request it aborted: nobody reads it
        }
        catch (OperationCanceledException)
        {
        }

        // Logged either way (answered as JSON, the turn used to end without a word of why).
        await Eventually.Until(() => Task.FromResult(TurnLogEntries(conversation)), logged => logged.Any(e => e.Level == LogLevel.Information
            && e.Message == $"Chat turn in conversation {conversation} cancelled: the client went away"), seconds: 60,
            what: "The cancelled turn was not logged");
        never.SetResult();
    }

    [Fact]
    public async Task A_client_that_disconnects_cancels_the_model_call_and_only_the_user_message_stays()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        // A model of its own: its chat turn's span is told from those of other collections' tests (spans are the process's).
        var model = $"fake-model-{Guid.NewGuid():N}";
        await client.AddProviderAsync(app.Model.BaseUrl, chatModel: model);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        var words = string.Join(' ', Enumerable.Range(1, 200).Select(i => "word" + i));
        app.Model.Responder = Answer(marker, _ => new FakeReply(words, ChunkDelay: TimeSpan.FromMilliseconds(50)), app.Model.Responder);
        var abortedBefore = app.Model.AbortedRequests;

        using var cancel = new CancellationTokenSource();
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} talk") };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using (var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancel.Token))
        {
            var stream = await response.Content.ReadAsStreamAsync(cancel.Token);
            var buffer = new byte[256];
            var read = await stream.ReadAsync(buffer, cancel.Token);
            Assert.Contains("event: delta", Encoding.UTF8.GetString(buffer, 0, read), StringComparison.Ordinal);
            await cancel.CancelAsync();
        }

        // The model call is cancelled: the fake model sees its client go away long before it would have finished (10 s).
        await Eventually.Until(() => Task.FromResult(app.Model.AbortedRequests), aborted => aborted > abortedBefore, seconds: 8,
            what: "The model call was not cancelled");
        // The turn has stored whatever it was going to store once its span ends (it ends when the turn is disposed, after
        // any append).
        await Eventually.Until(() => Task.FromResult(StreamedTurnsEnded(model)), ended => ended > 0, seconds: 60,
            what: "The chat turn did not end");
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Fact]
    public async Task A_provider_error_that_repeats_the_credentials_its_key_carries_answers_and_is_logged_without_them()
    {
        // A key written as a header value ("Basic base64(user:password)"): a server that repeats what it was sent quotes its
        // parts on their own, which only the whole key was scrubbed of.
        const string password = "correct-horse-battery-42";
        var credentials = Convert.ToBase64String(Encoding.UTF8.GetBytes("alice:" + password));
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, "Basic " + credentials);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker,
            _ => FakeReply.Error(401, $"user alice:{password} may not use this model (credentials {credentials}; the password {password} expired)"),
            app.Model.Responder);

        var response = await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} hi" });
        var body = await response.Content.ReadAsStringAsync();
        var problem = await response.ShouldBeProblem(502);

        Assert.Contains("may not use this model", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        foreach (var part in new[] { password, credentials })
        {
            Assert.DoesNotContain(part, body, StringComparison.Ordinal);
            Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(part, StringComparison.Ordinal));
        }
    }

    [Theory]
    [InlineData(401, "Incorrect API key provided: sk-leaky-key-55556666.")]
    [InlineData(500, "The server had an error while processing your request (key sk-leaky-key-55556666).")]
    public async Task A_provider_error_answers_502_and_stores_nothing_but_the_user_message(int status, string message)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, "sk-leaky-key-55556666");
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => FakeReply.Error(status, message), app.Model.Responder);

        var response = await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} hi" });
        var body = await response.Content.ReadAsStringAsync();
        var problem = await response.ShouldBeProblem(502);

        Assert.Equal(status, problem.GetProperty("providerStatus").GetInt32());
        Assert.Contains($"HTTP {status}", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.DoesNotContain("sk-leaky-key-55556666", body, StringComparison.Ordinal);
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains("sk-leaky-key-55556666", StringComparison.Ordinal));
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_turn_still_running_at_its_deadline_cancels_the_tool_call_answers_504_naming_the_setting_and_logs_the_tool(bool streamed)
    {
        // Far shorter than the tool's own bound (Mcp:ToolCallTimeout, 30 s here), which the turn used to wait for.
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Chat:TurnTimeout"] = "00:00:02" });
        using var client = ClientOn(node);
        var conversation = await app.StartWithCalculatorAsync(client);
        var sleepy = await client.AddMcpServerAsync("sleepy", app.Mcp.UnrulyUrl("hang"));
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "it slept", app.Model.Responder, new FakeToolCall("call_s", "sleepy", "{}"));

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} wake it") };
        if (streamed)
        {
            request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        }

        using var response = await client.SendAsync(request);
        JsonElement problem;
        if (streamed)
        {
            // The stream began with the model's call: the turn ends with its error event, as a model that fails mid-turn.
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var events = ParseEvents(await response.Content.ReadAsStringAsync());
            Assert.Equal(["tool-call", "error"], events.Select(e => e.Name));
            problem = events[^1].Data;
            Assert.Equal(504, problem.GetProperty("status").GetInt32());
        }
        else
        {
            problem = await response.ShouldBeProblem(504);
        }

        Assert.Equal("The chat turn did not finish in time.", problem.GetProperty("title").GetString());
        Assert.Equal("The turn did not finish within 2 s (Chat:TurnTimeout): the call to tool 'sleepy' of MCP server 'sleepy', still " +
            "running then, was cancelled, and nothing but the user's message is stored.", problem.GetProperty("detail").GetString());
        Assert.Equal("https://tools.ietf.org/html/rfc9110#section-15.6.5", problem.GetProperty("type").GetString());
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
        // The log says the turn ran out of time in the tool call, not that the provider failed (it used to).
        var logged = TurnLogEntries(conversation);
        Assert.Contains(logged, e => e.Level == LogLevel.Warning
            && e.Message.Contains("ran past Chat:TurnTimeout (00:00:02)", StringComparison.Ordinal)
            && e.Message.Contains($"tool sleepy of MCP server sleepy ({sleepy.Id})", StringComparison.Ordinal));
        Assert.DoesNotContain(logged, e => e.Message.Contains("failed at provider", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_model_still_answering_at_the_turns_deadline_is_cancelled_answers_504_naming_the_setting_and_logs_the_model_call()
    {
        await using var node = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["Chat:TurnTimeout"] = "00:00:02",
            ["Providers:RequestTimeout"] = "00:01:00", // the model call's own bound, which the turn used to wait for
        });
        using var client = ClientOn(node);
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        var never = new TaskCompletionSource();
        app.Model.Responder = Answer(marker, _ => new FakeReply("too late", Hold: never.Task), app.Model.Responder);
        var abortedBefore = app.Model.AbortedRequests;

        var response = await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} take your time" });
        var problem = await response.ShouldBeProblem(504);

        Assert.StartsWith("The turn did not finish within 2 s (Chat:TurnTimeout): the call to provider 'fake' (model 'fake-model'), still running then, was cancelled",
            problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        await Eventually.Until(() => Task.FromResult(app.Model.AbortedRequests), aborted => aborted > abortedBefore, seconds: 60,
            what: "The model call was not cancelled");
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
        var logged = TurnLogEntries(conversation);
        Assert.Contains(logged, e => e.Level == LogLevel.Warning
            && e.Message.Contains("ran past Chat:TurnTimeout (00:00:02)", StringComparison.Ordinal)
            && e.Message.Contains("the model call (provider fake, model fake-model)", StringComparison.Ordinal));
        Assert.DoesNotContain(logged, e => e.Message.Contains("failed at provider", StringComparison.Ordinal));
        never.SetResult();
    }

    [Fact]
    public async Task The_turns_deadline_runs_on_the_clock_the_host_gives_it()
    {
        // A clock of the test's own for the chat turns only: the deadline passes when it says so, not ten minutes later.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var node = await app.StartHostAsync(
            new Dictionary<string, string?>
            {
                ["Chat:TurnTimeout"] = "00:10:00",
                ["Providers:RequestTimeout"] = "00:00:05", // on the wall clock: what ends the turn when its deadline does not
            },
            services => services.AddScoped(sp => ActivatorUtilities.CreateInstance<ChatTurns>(sp, (TimeProvider)clock)));
        using var client = ClientOn(node);
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        var (asked, never) = HoldTheModel(marker);

        var turn = client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} take your time" });
        await asked.WaitAsync(TimeSpan.FromSeconds(30));
        clock.Advance(TimeSpan.FromMinutes(10));
        var problem = await (await turn).ShouldBeProblem(504);

        Assert.StartsWith("The turn did not finish within 600 s (Chat:TurnTimeout)", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
        never.SetResult();
    }

    /// <summary>
    /// A client on <paramref name="node"/>, a host the test started with settings of its own, authenticated as
    /// <paramref name="user"/> (a new user when not given), as <c>app.Client</c> is on the shared host.
    /// </summary>
    private HttpClient ClientOn(Alba.IAlbaHost node, string? user = null)
    {
        var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user ?? ModularChatApp.NewUser()));
        return client;
    }

    /// <summary>
    /// Makes the fake model hold its answer to the requests of <paramref name="marker"/> until <c>Release</c> is completed;
    /// <c>Asked</c> completes when it was asked.
    /// </summary>
    private (Task Asked, TaskCompletionSource Release) HoldTheModel(string marker)
    {
        var asked = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        app.Model.Responder = Answer(marker, _ =>
        {
            asked.TrySetResult();
            return new FakeReply("too late", Hold: release.Task);
        }, app.Model.Responder);
        return (asked.Task, release);
    }

    /// <summary>What the hosts logged about the turns of <paramref name="conversation"/>.</summary>
    private List<LogEntry> TurnLogEntries(Guid conversation)
        => [.. app.Logs.Entries.Where(e => e.Message.Contains($"conversation {conversation}", StringComparison.Ordinal))];

    [Fact]
    public async Task A_provider_error_before_the_first_token_of_a_stream_still_answers_a_problem()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => FakeReply.Error(500, "boom"), app.Model.Responder);

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} hi") };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        var response = await client.SendAsync(request);

        await response.ShouldBeProblem(502);
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Theory]
    [InlineData("{}", "ended its stream without sending anything")]
    [InlineData("""{"error":"this gateway has no model here (key sk-leaky-key-12123434)"}""", "reported an error instead of an answer: this gateway has no model here")]
    public async Task A_stream_request_answered_with_no_stream_at_all_answers_502_and_stores_nothing_but_the_user_message(string answer, string why)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, "sk-leaky-key-12123434");
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => new FakeReply(RawBody: answer), app.Model.Responder);

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} hi") };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        var problem = await response.ShouldBeProblem(502);

        // A gateway's error answered as plain JSON to a stream request used to be "a stream that ended without anything".
        Assert.Contains(why, problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.DoesNotContain("sk-leaky-key-12123434", body, StringComparison.Ordinal);
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Fact]
    public async Task An_error_a_gateway_answers_with_status_200_answers_502_with_its_words_and_stores_nothing_but_the_user_message()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, "sk-leaky-key-56567878");
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => new FakeReply(RawBody:
            """{"error":{"message":"Rate limit exceeded: free-models-per-day (key sk-leaky-key-56567878)","code":429}}"""), app.Model.Responder);

        var response = await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} hi" });
        var body = await response.Content.ReadAsStringAsync();
        var problem = await response.ShouldBeProblem(502);

        // It used to say "a chat completion without choices or with fields missing", without the gateway's reason.
        var detail = problem.GetProperty("detail").GetString()!;
        Assert.Equal("The model provider refused or failed the request.", problem.GetProperty("title").GetString());
        Assert.Contains("Provider 'fake' (model 'fake-model') reported an error instead of an answer (429): Rate limit exceeded: free-models-per-day", detail, StringComparison.Ordinal);
        Assert.DoesNotContain("sk-leaky-key-56567878", body, StringComparison.Ordinal);
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains("sk-leaky-key-56567878", StringComparison.Ordinal));
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Fact]
    public async Task An_error_the_model_reports_in_the_middle_of_its_stream_fails_the_turn_with_an_error_event_and_stores_nothing_but_the_user_message()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, "sk-leaky-key-77778888");
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => new FakeReply("The first half of", StreamEnd:
            ["""{"error":{"message":"The server had an error while processing your request (key sk-leaky-key-77778888).","type":"server_error","param":null,"code":null}}"""]),
            app.Model.Responder);

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} talk") };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        var events = ParseEvents(body);

        // It used to end with "done", the answer stored as "(the model returned no text)" or as the half that came.
        Assert.Equal(HttpStatusCode.OK, response.StatusCode); // the stream had begun
        var error = events.Last();
        Assert.Equal("error", error.Name);
        Assert.Equal(502, error.Data.GetProperty("status").GetInt32());
        Assert.Equal("The model provider failed while answering.", error.Data.GetProperty("title").GetString());
        var detail = error.Data.GetProperty("detail").GetString()!;
        Assert.Contains("Provider 'fake' (model 'fake-model') reported an error in its stream (server_error)", detail, StringComparison.Ordinal);
        Assert.Contains("The server had an error while processing your request", detail, StringComparison.Ordinal);
        Assert.DoesNotContain("sk-leaky-key-77778888", body, StringComparison.Ordinal);
        Assert.DoesNotContain(events, e => e.Name == "done");
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    /// <summary>Streams that end before the model finished: cut short (no finish reason, no [DONE]), or with an error event longer than a line is kept (64 KiB).</summary>
    [Theory]
    [InlineData(false, "ended its stream before the model finished")]
    [InlineData(true, "reported an error in its stream (server_error): The model crashed halfway.")]
    public async Task A_stream_that_ends_before_the_model_finished_fails_the_turn_with_an_error_event_and_stores_nothing_but_the_user_message(bool longError, string why)
    {
        var (client, conversation, marker) = await ChattingAsync();
        using var _ = client;
        string[] end = longError
            ? [$$$"""{"error":{"message":"The model crashed halfway.","type":"server_error","param":null,"details":"{{{new string('x', 70_000)}}}"}}"""]
            : [];
        app.Model.Responder = Answer(marker, _ => new FakeReply("The first half of", StreamEnd: end), app.Model.Responder);

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} talk") };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var response = await client.SendAsync(request);
        var events = ParseEvents(await response.Content.ReadAsStringAsync());

        // It used to end with "done", "The first half of" stored as the answer (the same answer unstreamed is a 502).
        var error = events.Last();
        Assert.Equal("error", error.Name);
        Assert.Equal(502, error.Data.GetProperty("status").GetInt32());
        Assert.Equal("The model provider failed while answering.", error.Data.GetProperty("title").GetString());
        Assert.Contains(why, error.Data.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.DoesNotContain(events, e => e.Name == "done");
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    /// <summary>Chat completions that are JSON but cannot be read: a lone surrogate, no choices at all, a count past 32 bits.</summary>
    public static TheoryData<string, string> UnreadableCompletions => new()
    {
        {
            """{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"fake-model","choices":[{"index":0,"message":{"role":"assistant","content":"A\ud800B"},"finish_reason":"stop"}]}""",
            "surrogate"
        },
        { """{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"fake-model","choices":null}""", "'Null'" },
        {
            """{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"fake-model","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":3000000000}}""",
            "format"
        },
    };

    [Theory]
    [MemberData(nameof(UnreadableCompletions))]
    public async Task An_answer_that_cannot_be_read_answers_502_saying_so_and_not_that_the_provider_could_not_be_reached(string body, string why)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => new FakeReply(RawBody: body), app.Model.Responder);

        var problem = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} hi" })).ShouldBeProblem(502);

        // It used to say "could not be reached", with the JSON reader's complaint, about a provider that had answered.
        var detail = problem.GetProperty("detail").GetString()!;
        Assert.Equal("The model provider's answer could not be read.", problem.GetProperty("title").GetString());
        Assert.Contains("Provider 'fake' (model 'fake-model') answered with something that could not be read", detail, StringComparison.Ordinal);
        Assert.Contains(why, detail, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("could not be reached", detail, StringComparison.Ordinal);
        Assert.False(problem.TryGetProperty("providerStatus", out _));
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_answer_longer_than_a_message_may_be_is_stored_cut_and_marked(bool streamed)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        var limit = app.Host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<ChatTurnOptions>>().Value.MaxContentLength;
        var longAnswer = string.Concat(Enumerable.Repeat("All work and no play. ", (limit / 22) + 100)).Trim();
        app.Model.Responder = Answer(marker, _ => FakeReply.Text(longAnswer), app.Model.Responder);

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} talk") };
        if (streamed)
        {
            request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        }

        var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "assistant"], messages.Select(m => m.Role));
        Assert.Equal(longAnswer[..limit], messages[1].Content);
        Assert.Equal(("true", longAnswer.Length.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            (messages[1].Metadata!["truncated"], messages[1].Metadata!["answerLength"]));
    }

    [Fact]
    public async Task Where_messages_are_shorter_than_the_chat_limits_answers_and_tool_results_are_cut_to_the_messages_limit()
    {
        // Chat:MaxContentLength and MaxStoredToolResultLength keep their defaults (100,000 and 20,000); messages hold 3,000.
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Conversations:MaxContentLength"] = "3000" });
        var user = ModularChatApp.NewUser();
        using var client = ClientOn(node, user);
        var conversation = await app.StartWithCalculatorAsync(client);
        var marker = Marker();
        var longAnswer = string.Concat(Enumerable.Repeat("All work and no play. ", 200)).Trim();
        app.Model.Responder = CallsThenAnswer(marker, longAnswer, app.Model.Responder,
            new FakeToolCall("call_big", "echo", $$"""{"text":"{{new string('y', 5_000)}}"}"""));

        var turn = await client.ChatAsync(conversation, $"{marker} talk");

        // Before: the answer (4,399 characters) and the tool's result were refused as messages (422) after the model was paid for.
        Assert.Equal(longAnswer[..3000], turn.Answer.Content);
        Assert.Equal(new string('y', 3000), Assert.Single(turn.ToolCalls).Result);
        var messages = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "tool", "tool", "assistant"], messages.Select(m => m.Role));
        Assert.Equal("true", messages[1].Metadata!["truncated"]); // the call, without its arguments
        Assert.Equal(("true", longAnswer.Length.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            (messages[3].Metadata!["truncated"], messages[3].Metadata!["answerLength"]));
        await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = new string('z', 3001) })).ShouldBeProblem(422);
    }

    [Fact]
    public async Task A_provider_that_does_not_answer_in_time_answers_504()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => new FakeReply("late", Delay: TimeSpan.FromSeconds(8)), app.Model.Responder);

        await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} hi" })).ShouldBeProblem(504);
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Fact]
    public async Task A_provider_that_never_answers_answers_504_after_one_request_timeout_without_a_retry()
    {
        // Retries on (the default, 1), a short timeout.
        await using var node = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["Providers:RequestTimeout"] = "00:00:02",
            ["Providers:MaxRetries"] = "1",
        });
        using var client = ClientOn(node);
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => new FakeReply("far too late", Delay: TimeSpan.FromSeconds(30)), app.Model.Responder);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var problem = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} hello?" })).ShouldBeProblem(504);

        // It used to try again after the timeout, then answer 502 "could not be reached" after twice the timeout.
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(3.5));
        Assert.Equal("The model provider did not answer in time.", problem.GetProperty("title").GetString());
        Assert.Contains("Providers:RequestTimeout", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(1, app.Model.RequestsAbout(marker));
        Assert.Equal(["user"], (await client.MessagesAsync(conversation)).Select(m => m.Role));
    }

    [Fact]
    public async Task The_context_holds_the_latest_messages_within_the_token_budget_and_leaves_tool_messages_out()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var history = Enumerable.Range(1, 40).Select(i => new
        {
            role = i % 10 == 0 ? "tool" : i % 2 == 1 ? "user" : "assistant",
            content = $"message number {i} " + string.Join(' ', Enumerable.Repeat("filler", 20)),
        }).ToList();
        (await client.PostJson($"/api/conversations/{conversation}/messages/batch", new { messages = history })).EnsureSuccessStatusCode();
        var marker = Marker();
        app.Model.Responder = Answer(marker, _ => FakeReply.Text("ok"), app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{marker} and now?");

        // The turn's own request ends with the user's message. (The conversation's background summaries ask the tenant's
        // model too, and one that runs after the turn has the marker in its transcript.)
        var sent = app.Model.Requests.Last(r => r.Messages.LastOrDefault()?["content"]?.ToString() == $"{marker} and now?").Messages;
        Assert.Equal("system", sent[0]!["role"]!.ToString());
        Assert.Contains(marker, sent[^1]!["content"]!.ToString(), StringComparison.Ordinal);
        Assert.Contains("message number 39 ", sent[^2]!["content"]!.ToString(), StringComparison.Ordinal); // the most recent history, in order
        Assert.DoesNotContain(sent, m => m!["content"]!.ToString().StartsWith("message number 1 ", StringComparison.Ordinal)); // the oldest did not fit
        Assert.DoesNotContain(sent, m => m!["role"]!.ToString() == "tool");
        Assert.InRange(turn.Context.Tokens, 1, 300 + 60); // the budget (300 here) plus at most the one message that is always included
        Assert.Equal(sent.Count - 1, turn.Context.Messages);
    }

    [Theory]
    [InlineData("00:00:01")]
    [InlineData("00:00:32")] // longer than the host's default shutdown timeout (30 s), which then dropped them unanswered
    public async Task Turns_still_waiting_for_their_model_when_the_node_stops_answer_503_in_time_and_keep_the_users_message(string grace)
    {
        // A real process with Kestrel, stopped with SIGTERM: the host then waits for requests up to its shutdown timeout,
        // then drops them.
        await using var node = await app.StartHostProcessAsync(new Dictionary<string, string>
        {
            ["Chat__ShutdownGrace"] = grace,
            ["OutboundNetwork__AllowPrivateNetworks"] = "true",
        });
        var user = ModularChatApp.NewUser();
        using var client = node.Client(app.Token(user));
        await client.AddProviderAsync(app.Model.BaseUrl, "sk-chat-key-0123456789abc");
        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        // Slower than the host waits for requests when it stops: the plain turn's model says nothing, the streamed one begins its stream.
        app.Model.Responder = Answer(marker, r => r.Stream
            ? new FakeReply("first words then a long silence", ChunkDelay: TimeSpan.FromSeconds(60))
            : new FakeReply("too late", Delay: TimeSpan.FromSeconds(60)), app.Model.Responder);
        var plain = client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} plain", externalId = "plain" });
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent($"{marker} streamed") };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        var streamed = client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        await Eventually.Until(() => Task.FromResult(app.Model.Requests.Count(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal))), n => n == 2);
        using var started = await streamed; // its first update arrived: the answer has begun

        node.Terminate();

        var wait = TimeSpan.Parse(grace, System.Globalization.CultureInfo.InvariantCulture) + TimeSpan.FromSeconds(25);
        using var refused = await plain.WaitAsync(wait);
        var problem = await refused.ShouldBeProblem(503);
        Assert.Contains("shutting down", problem.GetProperty("title").GetString(), StringComparison.Ordinal);
        Assert.NotNull(refused.Headers.RetryAfter);
        var (name, data) = ParseEvents(await started.Content.ReadAsStringAsync().WaitAsync(wait))[^1];
        Assert.Equal("error", name);
        Assert.Equal(503, data.GetProperty("status").GetInt32());
        Assert.Equal(0, await node.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        // Logged as stopped with the node, not as clients that went away (both were still there, and were answered 503).
        Assert.Equal(2, node.Output.Split("stopped: the node is stopping and Chat:ShutdownGrace has passed").Length - 1);
        Assert.DoesNotContain("the client went away", node.Output, StringComparison.Ordinal);
        // The process ran on a database of its own (see StartHostProcessAsync): read what it kept through a node on that one.
        await using var reader = await app.StartHostAsync(new Dictionary<string, string?> { ["ConnectionStrings:Postgres"] = await app.ProcessDatabaseAsync() });
        using var readerClient = ClientOn(reader, user);
        var messages = await readerClient.MessagesAsync(conversation);
        Assert.Equal(["user", "user"], messages.Select(m => m.Role)); // the questions are kept; no answer was stored
    }

    [Fact]
    public async Task Chat_input_is_validated_and_names_the_field()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();

        await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = " " })).ShouldNameField("content");
        await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = "hi", provider = "nope" })).ShouldNameField("provider");
        var problem = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = "hi", toolServers = new[] { " Nöpe ", "Nöpe" } })).ShouldBeProblem(400);
        // The unknown names as sent (trimmed), once each; not in the form they are compared in.
        Assert.EndsWith("does not have: Nöpe.", problem.GetProperty("errors").GetProperty("toolServers")[0].GetString(), StringComparison.Ordinal);
        // More names than a tenant can have servers (Mcp:MaxServersPerTenant, 20): each was compared with each server before.
        problem = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = "hi", toolServers = Enumerable.Range(0, 21).Select(i => $"s{i}") }))
            .ShouldBeProblem(422);
        Assert.True(problem.GetProperty("errors").TryGetProperty("toolServers", out _), problem.ToString());
        await (await client.PostJson($"/api/conversations/{Guid.NewGuid()}/chat", new { content = "hi" })).ShouldBeProblem(404);
        Assert.Empty(await client.MessagesAsync(conversation));
    }

    [Fact]
    public async Task Tool_servers_are_chosen_by_name_in_any_unicode_form_even_as_stored_before_names_were_normalized()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        await client.AddProviderAsync(app.Model.BaseUrl);
        var server = await client.AddMcpServerAsync("Cafe\u0301", app.Mcp.StreamableHttpUrl); // e and U+0301
        await using (var session = app.Host.Services.GetRequiredService<Marten.IDocumentStore>().LightweightSession(user))
        {
            // As a version before this one stored it: NormalizedName was Trim().ToLowerInvariant(), e and U+0301 kept apart.
            var stored = (await session.LoadAsync<ModularChat.Providers.Domain.McpServerConnection>(server.Id))!;
            stored.NormalizedName = "cafe\u0301";
            session.Store(stored);
            await session.SaveChangesAsync();
        }

        var conversation = await client.StartConversationAsync();
        var marker = Marker();
        app.Model.Responder = CallsThenAnswer(marker, "5", app.Model.Responder, new FakeToolCall("call_1", "add", """{"a":2,"b":3}"""));

        // Named with the composed É (U+00C9), upper case.
        var turn = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = $"{marker} add", toolServers = new[] { "CAF\u00c9" } }))
            .ReadAs<ChatTurnDto>(HttpStatusCode.OK);

        var call = Assert.Single(turn.ToolCalls);
        Assert.Equal(("Cafe\u0301", "add", "5"), (call.Server, call.Tool, call.Result));
        Assert.Contains("add", app.Model.Requests.First(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).ToolNames);
    }

    [Fact]
    public async Task A_provider_is_chosen_by_name_in_any_unicode_form()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, name: "first");
        await client.AddProviderAsync(app.Model.BaseUrl, name: "\uff37\uff4f\uff52\uff4b"); // full-width letters
        var conversation = await client.StartConversationAsync();

        var turn = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = "hello?", provider = "work" }))
            .ReadAs<ChatTurnDto>(HttpStatusCode.OK);

        Assert.Equal("\uff37\uff4f\uff52\uff4b", turn.Provider);
    }

    [Fact]
    public async Task A_provider_name_that_two_providers_stored_before_normalization_share_answers_409_naming_both()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var conversation = await client.StartConversationAsync();
        // As a version before names were compared in their Unicode form stored them: "Café" composed and decomposed, two names.
        var now = DateTimeOffset.UtcNow;
        ProviderSettings Old(string name, string normalized) => new()
        {
            Id = Guid.CreateVersion7(), TenantId = user, Name = name, NormalizedName = normalized, Kind = ProviderKinds.OpenAiCompatible,
            Endpoint = app.Model.BaseUrl.ToString().TrimEnd('/'), ChatModel = "m", CreatedAt = now, UpdatedAt = now,
        };
        var (composed, decomposed) = (Old("Caf\u00e9", "caf\u00e9"), Old("Cafe\u0301", "cafe\u0301"));
        await using (var session = app.Host.Services.GetRequiredService<Marten.IDocumentStore>().LightweightSession(user))
        {
            session.Store(composed, decomposed);
            await session.SaveChangesAsync();
        }

        var problem = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = "hello?", provider = "caf\u00e9" })).ShouldBeProblem(409);

        Assert.Contains("2 providers", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(new[] { composed.Id, decomposed.Id }.Order(), problem.GetProperty("providers").EnumerateArray().Select(e => e.GetGuid()).Order());
        Assert.Empty(await client.MessagesAsync(conversation));
        // Either one by its id still works.
        var turn = await (await client.PostJson($"/api/conversations/{conversation}/chat", new { content = "hello?", provider = decomposed.Id.ToString() }))
            .ReadAs<ChatTurnDto>(HttpStatusCode.OK);
        Assert.Equal("Cafe\u0301", turn.Provider);
    }

    /// <summary>A fresh tenant with the fake provider, a conversation, and a marker to route the fake model's answers by.</summary>
    private async Task<(HttpClient Client, Guid Conversation, string Marker)> ChattingAsync()
    {
        var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl, "sk-chat-key-0123456789abc");
        return (client, await client.StartConversationAsync(), Marker());
    }

    /// <summary>Answers requests that carry <paramref name="marker"/> with <paramref name="reply"/>, everything else as before.</summary>
    internal static Func<RecordedRequest, FakeReply> Answer(string marker, Func<RecordedRequest, FakeReply> reply, Func<RecordedRequest, FakeReply> fallback)
        => request => request.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal) ? reply(request) : fallback(request);

    /// <summary>Answers the requests of <paramref name="marker"/> with <paramref name="calls"/>, then with <paramref name="answer"/> once they hold tool results.</summary>
    internal static Func<RecordedRequest, FakeReply> CallsThenAnswer(
        string marker, string answer, Func<RecordedRequest, FakeReply> fallback, params FakeToolCall[] calls)
        => Answer(marker, request => request.Messages.Any(m => m?["role"]?.ToString() == "tool") ? FakeReply.Text(answer) : FakeReply.Calls(calls), fallback);

    /// <summary>A chat turn, plain or streamed; streamed, its one <c>tool-result</c> event must say the call failed.</summary>
    private static async Task<ChatTurnDto> TurnWithOneFailedToolCallAsync(HttpClient client, Guid conversation, string content, bool streamed)
    {
        if (!streamed)
        {
            return await client.ChatAsync(conversation, content);
        }

        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent(content) };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var events = ParseEvents(await response.Content.ReadAsStringAsync());
        Assert.True(events.Single(e => e.Name == "tool-result").Data.GetProperty("failed").GetBoolean());
        return events.Last().Data.Deserialize<ChatTurnDto>(new JsonSerializerOptions(JsonSerializerDefaults.Web))!;
    }

    /// <summary>A streamed chat turn that must succeed: its events, and its <c>done</c> event's turn.</summary>
    private static async Task<(List<(string Name, JsonElement Data)> Events, ChatTurnDto Turn)> StreamedTurnAsync(HttpClient client, Guid conversation, string content)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/conversations/{conversation}/chat") { Content = JsonContent(content) };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var events = ParseEvents(await response.Content.ReadAsStringAsync());
        Assert.Equal("done", events[^1].Name);
        return (events, events[^1].Data.Deserialize<ChatTurnDto>(new JsonSerializerOptions(JsonSerializerDefaults.Web))!);
    }

    private static StringContent JsonContent(string content)
        => new(JsonSerializer.Serialize(new { content }), Encoding.UTF8, "application/json");

    private static List<(string Name, JsonElement Data)> ParseEvents(string text)
        => text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(block => block.Split('\n'))
            .Select(lines => (
                Name: lines.First(l => l.StartsWith("event: ", StringComparison.Ordinal))[7..],
                Data: JsonDocument.Parse(lines.First(l => l.StartsWith("data: ", StringComparison.Ordinal))[6..]).RootElement.Clone()))
            .ToList();

    private int StreamedTurnsEnded(string model)
        => app.Traces.Count(t => t.StartsWith("ModularChat | chat turn", StringComparison.Ordinal) && t.Contains("modularchat.chat.streamed=True", StringComparison.Ordinal)
            && t.Contains($"gen_ai.request.model={model}", StringComparison.Ordinal));
}
