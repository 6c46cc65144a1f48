using System.Text.Json;
using Microsoft.Extensions.AI;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.Conversations.Contracts;
using ModularChat.Providers.Mcp;

namespace ModularChat.Providers.Features.Chat;

/// <summary>One message of a turn's context, with what it costs and how many conversation messages it stands for.</summary>
/// <param name="Tokens">o200k tokens of what is sent (text, or function names, arguments and results), without framing.</param>
/// <param name="ConversationMessages">Stored messages it carries (0 for the system prompt and the summary).</param>
internal sealed record ContextPart(ChatMessage Message, int Tokens, int ConversationMessages);

/// <summary>
/// Turns the messages of a context window into chat messages: user, assistant and system messages as they are, and the
/// tool calls and results that chat turns stored (<see cref="ChatTurns.ChatTurn.CompleteAsync"/>) as an assistant
/// message of <see cref="FunctionCallContent"/>s followed by one <see cref="ChatRole.Tool"/> message of
/// <see cref="FunctionResultContent"/> per call, in sequence order, before the answer they led to. This is what
/// Microsoft.Extensions.AI's OpenAI client sends as <c>assistant.tool_calls</c> and <c>tool</c> messages with
/// <c>tool_call_id</c>, the shape OpenAI-compatible servers expect.
/// <list type="bullet">
/// <item>Only whole pairs: providers refuse a call without its result and a result without its call, so a call whose
/// result is not in the window (or a result whose call is not, as when the window's oldest end cuts a turn in half)
/// is left out with its partner. Pairs match by call id within one round: consecutive calls, then their results.</item>
/// <item>A tool message is recognised by its metadata (<c>kind</c> = <c>tool_call</c> with a <c>callId</c> and the
/// JSON content <c>{tool, server, arguments}</c>, or <c>kind</c> = <c>tool_result</c> with the same <c>callId</c>),
/// whoever appended it. Tool messages without it (a client's own, through the messages API) answer no call the model
/// made: sent as tool messages they would be refused, and sent as user or assistant text they would put words in
/// someone's mouth, so they are left out, as all tool messages were before replay. A client that wants the model to
/// see such content appends it as a system or user message.</item>
/// <item>The function name is the one the model was offered (metadata <c>function</c>; turns stored before it was
/// recorded fall back to the tool's name), made a valid OpenAI function name, so the history stays valid when the
/// tool no longer exists or is not offered in this turn: OpenAI's chat completions do not require a past call to name
/// a function of the request's tools, only a well-formed name. (Some gateways to other vendors' models refuse past
/// calls in a request that offers no tools at all; <see cref="ChatTurnOptions.ReplayToolCalls"/> off avoids that.)</item>
/// </list>
/// </summary>
internal static class ToolCallReplay
{
    /// <summary>
    /// Metadata of a tool call stored without its arguments (they were longer than a stored tool message may be): it is
    /// never replayed, and so neither is its result.
    /// </summary>
    public const string TruncatedKey = "truncated";

    /// <param name="window">The context's messages, oldest first.</param>
    /// <param name="toolMessages">The window's tool messages as stored (with their metadata), by sequence; empty: leave every tool message out.</param>
    public static List<ContextPart> Replay(
        IEnumerable<ContextMessage> window, IReadOnlyDictionary<long, ConversationMessage> toolMessages, ITokenCounter tokens)
    {
        var parts = new List<ContextPart>();
        var round = new Round();
        foreach (var message in window)
        {
            if (message.Role != MessageRole.Tool)
            {
                round.CloseInto(parts);
                parts.Add(new ContextPart(new ChatMessage(Role(message.Role), message.Content), message.TokenCount, 1));
            }
            else if (toolMessages.TryGetValue(message.Sequence, out var stored))
            {
                round.Add(stored, tokens, parts);
            }
        }

        round.CloseInto(parts);
        return parts;
    }

    private static ChatRole Role(MessageRole role) => role switch
    {
        MessageRole.User => ChatRole.User,
        MessageRole.Assistant => ChatRole.Assistant,
        MessageRole.System => ChatRole.System,
        _ => ChatRole.User,
    };

    private sealed record Call(string CallId, FunctionCallContent Content, int Tokens);

    private sealed record Result(string CallId, string Text, int Tokens);

    /// <summary>Consecutive calls and the results after them (one model round of a turn).</summary>
    private sealed class Round
    {
        private readonly List<Call> _calls = [];
        private readonly List<Result> _results = [];

        public void Add(ConversationMessage message, ITokenCounter tokens, List<ContextPart> parts)
        {
            if (AsCall(message, tokens) is { } call)
            {
                if (_results.Count > 0)
                {
                    CloseInto(parts); // a call after results starts the next round
                }

                _calls.Add(call);
            }
            else if (AsResult(message) is { } result)
            {
                _results.Add(result);
            }
        }

        /// <summary>Adds the round's complete pairs to <paramref name="parts"/> and starts a new round.</summary>
        public void CloseInto(List<ContextPart> parts)
        {
            var pairs = new List<(Call Call, Result Result)>();
            foreach (var call in _calls)
            {
                // One call per id in a round: a repeated id could not say which result is whose.
                if (pairs.All(p => p.Call.CallId != call.CallId) && _results.FirstOrDefault(r => r.CallId == call.CallId) is { } result)
                {
                    pairs.Add((call, result));
                }
            }

            if (pairs.Count > 0)
            {
                parts.Add(new ContextPart(new ChatMessage(ChatRole.Assistant, [.. pairs.Select(p => p.Call.Content)]), pairs.Sum(p => p.Call.Tokens), pairs.Count));
                parts.AddRange(pairs.Select(p => new ContextPart(
                    new ChatMessage(ChatRole.Tool, [new FunctionResultContent(p.Result.CallId, p.Result.Text)]), p.Result.Tokens, 1)));
            }

            _calls.Clear();
            _results.Clear();
        }
    }

    private static Call? AsCall(ConversationMessage message, ITokenCounter tokens)
    {
        if (Metadata(message, "kind") != "tool_call" || Metadata(message, "callId") is not { Length: > 0 } callId
            || Metadata(message, TruncatedKey) == "true") // stored without its arguments: the call cannot be given back as it was
        {
            return null;
        }

        JsonElement arguments;
        try
        {
            using var content = JsonDocument.Parse(message.Content);
            if (content.RootElement.ValueKind != JsonValueKind.Object)
            {
                return null;
            }

            arguments = content.RootElement.TryGetProperty("arguments", out var found) ? found.Clone() : default;
        }
        catch (JsonException)
        {
            return null;
        }

        var named = new Dictionary<string, object?>(StringComparer.Ordinal);
        switch (arguments.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var argument in arguments.EnumerateObject())
                {
                    named[argument.Name] = argument.Value;
                }

                break;
            case JsonValueKind.Null or JsonValueKind.Undefined:
                break;
            default:
                return null; // not the arguments of a function call
        }

        var name = McpToolSession.ExposedName(Metadata(message, "function") ?? Metadata(message, "tool") ?? "");
        // Counted as the OpenAI client writes them on the wire (indented), not as they are stored.
        var sentArguments = JsonSerializer.Serialize(named, AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(IDictionary<string, object?>)));
        return new Call(callId, new FunctionCallContent(callId, name, named), tokens.Count(name) + tokens.Count(sentArguments));
    }

    private static Result? AsResult(ConversationMessage message)
        => Metadata(message, "kind") == "tool_result" && Metadata(message, "callId") is { Length: > 0 } callId
            ? new Result(callId, message.Content, message.TokenCount)
            : null;

    private static string? Metadata(ConversationMessage message, string key) => message.Metadata?.GetValueOrDefault(key);
}
