using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Testing.Fakes;

namespace ModularChat.Providers.Tests;

/// <summary>
/// Later turns give the model the tool calls and results of earlier ones (Chat:ReplayToolCalls), as whole
/// call/result pairs in the OpenAI wire format, read from what the fake model server received.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class ToolCallReplayTests(ProvidersApp app)
{
    /// <summary>Tokens the Conversations module counts per message for its framing (Context:TokensPerMessage, not set by the tests).</summary>
    private const int Framing = 4;

    [Fact]
    public async Task The_next_turn_gives_the_model_the_earlier_tool_calls_and_their_results_under_the_same_call_ids()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var first = ChatTests.Marker();
        var (callA, callB) = ("call_a_" + first, "call_b_" + first);
        app.Model.Responder = ChatTests.CallsThenAnswer(first, "5 and 9", app.Model.Responder,
            new FakeToolCall(callA, "add", """{"a":2,"b":3}"""), new FakeToolCall(callB, "add", """{"a":4,"b":5}"""));
        await client.ChatAsync(conversation, $"{first} 2 + 3 and 4 + 5?");
        var second = ChatTests.Marker();
        app.Model.Responder = ChatTests.Answer(second, _ => FakeReply.Text("You asked for 5 and 9."), app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{second} what were the sums?");

        var sent = SentFor(second);
        Assert.Equal(["system", "user", "assistant", "tool", "tool", "assistant", "user"], sent.Select(Role));
        var calls = sent[2]!["tool_calls"]!.AsArray();
        Assert.Equal([callA, callB], calls.Select(c => c!["id"]!.GetValue<string>()));
        Assert.Equal(["function", "function"], calls.Select(c => c!["type"]!.GetValue<string>()));
        Assert.Equal(["add", "add"], calls.Select(c => c!["function"]!["name"]!.GetValue<string>()));
        Assert.Equal([5, 9], calls.Select(c => JsonNode.Parse(c!["function"]!["arguments"]!.GetValue<string>())!.AsObject()
            .Sum(a => a.Value!.GetValue<int>())));
        Assert.Equal([(callA, "5"), (callB, "9")], sent.Skip(3).Take(2).Select(m => (m!["tool_call_id"]!.GetValue<string>(), Content(m))));
        Assert.Equal("5 and 9", Content(sent[5]));
        Assert.Equal(7, turn.Context.Messages); // both turns' messages: the user's, two calls, two results, the answer, the new one
        Assert.Equal(SentTokens(sent), turn.Context.Tokens);
    }

    [Fact]
    public async Task A_tool_result_whose_call_fell_out_of_the_window_is_not_sent_without_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var first = ChatTests.Marker();
        // Long enough that the result fits in the 300-token budget of the tests, but not together with its call.
        var words = string.Join(' ', Enumerable.Repeat("pebble", 75));
        app.Model.Responder = ChatTests.CallsThenAnswer(first, "Echoed.", app.Model.Responder, new FakeToolCall("call_long", "echo", $$"""{"text":"{{words}}"}"""));
        await client.ChatAsync(conversation, $"{first} echo this");
        var second = ChatTests.Marker();
        app.Model.Responder = ChatTests.Answer(second, _ => FakeReply.Text("ok"), app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{second} and now?");

        // The premise: newest first within the budget, the window reaches the result but not its call.
        var stored = await client.MessagesAsync(conversation);
        Assert.Equal(["user", "tool", "tool", "assistant", "user", "assistant"], stored.Select(m => m.Role));
        var budget = app.Host.Services.GetRequiredService<IOptions<ChatTurnOptions>>().Value.ContextTokenBudget - Tokens("You are a helpful assistant.");
        var throughResult = stored[2..5].Sum(m => m.TokenCount + Framing);
        Assert.InRange(budget, throughResult, throughResult + stored[1].TokenCount + Framing - 1);

        var sent = SentFor(second);
        Assert.Equal(["system", "assistant", "user"], sent.Select(Role));
        Assert.DoesNotContain(sent, m => m!["tool_calls"] is not null || m["tool_call_id"] is not null);
        Assert.Equal(2, turn.Context.Messages);
        Assert.Equal(SentTokens(sent), turn.Context.Tokens);
    }

    [Fact]
    public async Task Tool_messages_a_client_appended_are_replayed_only_as_whole_pairs_with_call_metadata()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var messages = new object[]
        {
            new { role = "user", content = "Who is customer 7, and what is the weather?" },
            new { role = "tool", content = "sunny, 21 degrees" },
            new { role = "tool", content = "ghost result", metadata = new Dictionary<string, string> { ["kind"] = "tool_result", ["callId"] = "ghost" } },
            new
            {
                role = "tool", content = """{"tool":"add","server":"calc","arguments":{"a":1,"b":2}}""",
                metadata = new Dictionary<string, string> { ["kind"] = "tool_call", ["callId"] = "lonely", ["tool"] = "add" },
            },
            new
            {
                role = "tool", content = """{"tool":"crm.lookup","server":"crm","arguments":{"id":7}}""",
                metadata = new Dictionary<string, string> { ["kind"] = "tool_call", ["callId"] = "imported", ["tool"] = "crm.lookup" },
            },
            new { role = "tool", content = "customer 7 is Ada", metadata = new Dictionary<string, string> { ["kind"] = "tool_result", ["callId"] = "imported" } },
            // A call a chat turn stored without its arguments (they were too long): neither it nor its result goes back.
            new
            {
                role = "tool", content = """{"tool":"add","server":"calc","arguments":null}""",
                metadata = new Dictionary<string, string> { ["kind"] = "tool_call", ["callId"] = "cut", ["tool"] = "add", ["truncated"] = "true" },
            },
            new { role = "tool", content = "3", metadata = new Dictionary<string, string> { ["kind"] = "tool_result", ["callId"] = "cut" } },
            new { role = "assistant", content = "Customer 7 is Ada; it is sunny." },
        };
        (await client.PostJson($"/api/conversations/{conversation}/messages/batch", new { messages })).EnsureSuccessStatusCode();
        var marker = ChatTests.Marker();
        app.Model.Responder = ChatTests.Answer(marker, _ => FakeReply.Text("ok"), app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{marker} thanks");

        var sent = SentFor(marker);
        Assert.Equal(["system", "user", "assistant", "tool", "assistant", "user"], sent.Select(Role));
        var call = Assert.Single(sent[2]!["tool_calls"]!.AsArray());
        Assert.Equal(("imported", "crm_lookup"), (call!["id"]!.GetValue<string>(), call["function"]!["name"]!.GetValue<string>()));
        Assert.Equal(("imported", "customer 7 is Ada"), (sent[3]!["tool_call_id"]!.GetValue<string>(), Content(sent[3])));
        var wire = sent.ToJsonString();
        Assert.DoesNotContain("sunny, 21", wire, StringComparison.Ordinal);
        Assert.DoesNotContain("ghost", wire, StringComparison.Ordinal);
        Assert.DoesNotContain("lonely", wire, StringComparison.Ordinal);
        Assert.DoesNotContain("\"cut\"", wire, StringComparison.Ordinal);
        Assert.Equal(5, turn.Context.Messages);
    }

    [Fact]
    public async Task With_replay_off_earlier_tool_calls_are_left_out_and_only_the_answers_remain()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var conversation = await app.StartWithCalculatorAsync(client);
        var first = ChatTests.Marker();
        app.Model.Responder = ChatTests.CallsThenAnswer(first, "2 + 3 = 5", app.Model.Responder, new FakeToolCall("call_off", "add", """{"a":2,"b":3}"""));
        await client.ChatAsync(conversation, $"{first} what is 2 + 3?");
        var second = ChatTests.Marker();
        app.Model.Responder = ChatTests.Answer(second, _ => FakeReply.Text("ok"), app.Model.Responder);

        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["Chat:ReplayToolCalls"] = "false" });
        using var withoutReplay = node.Server.CreateClient();
        withoutReplay.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));
        var turn = await withoutReplay.ChatAsync(conversation, $"{second} and 3 + 4?");

        var sent = SentFor(second);
        Assert.Equal(["system", "user", "assistant", "user"], sent.Select(Role));
        Assert.Equal("2 + 3 = 5", Content(sent[2]));
        Assert.DoesNotContain(sent, m => m!["tool_calls"] is not null || m["tool_call_id"] is not null);
        Assert.Equal(3, turn.Context.Messages);
        Assert.Equal(SentTokens(sent), turn.Context.Tokens);
    }

    /// <summary>The messages of the last request the fake model received for <paramref name="marker"/>.</summary>
    private JsonArray SentFor(string marker) => app.Model.Requests.Last(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).Messages;

    private static string Role(JsonNode? message) => message?["role"]?.GetValue<string>() ?? "";

    /// <summary>A message's text, whether sent as a string or as content parts.</summary>
    private static string Content(JsonNode? message) => message?["content"] switch
    {
        JsonValue text => text.GetValue<string>(),
        JsonArray parts => string.Concat(parts.Select(p => p?["text"]?.GetValue<string>())),
        _ => "",
    };

    /// <summary>What the request cost as the chat turn counts it: every message's text, function names and arguments, plus its framing.</summary>
    private int SentTokens(JsonArray sent) => sent.Sum(m => Framing + Tokens(Content(m))
        + (m!["tool_calls"]?.AsArray() ?? []).Sum(c => Tokens(c!["function"]!["name"]!.GetValue<string>()) + Tokens(c["function"]!["arguments"]!.GetValue<string>())));

    private int Tokens(string text) => app.Host.Services.GetRequiredService<ITokenCounter>().Count(text);
}
