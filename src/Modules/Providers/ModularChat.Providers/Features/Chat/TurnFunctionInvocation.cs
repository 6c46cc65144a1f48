using Microsoft.Extensions.AI;
using ModularChat.Providers.Mcp;

namespace ModularChat.Providers.Features.Chat;

/// <summary>
/// Function invocation for a chat turn: Microsoft.Extensions.AI's, except for a call of a tool the model was not offered.
/// That one used to give the model "Error: Requested function "x" not found." as an ordinary result, reported and
/// stored as a call that did not fail; here the model is told in a sentence that nothing was called, and the call is
/// marked failed in <paramref name="tools"/> (reported and stored as failed, as a tool that reported an error). No
/// exception is attached to the result: the client counts those towards the errors after which it gives up the turn.
/// Nor is a call whose arguments are not JSON made: the client would call the tool without arguments (what the model
/// sent is then lost: <see cref="FunctionCallContent.Exception"/> says why, its arguments are null) and report it as a
/// success; the model is told instead, and the call marked failed. A call beyond the turn's <see cref="ToolCallLimit"/>
/// is not run either: its result tells the model so.
/// </summary>
internal sealed class TurnFunctionInvocation(IChatClient inner, McpToolSession tools, ToolCallLimit limit) : FunctionInvokingChatClient(inner)
{
    protected override ValueTask<object?> InvokeFunctionAsync(FunctionInvocationContext context, CancellationToken cancellationToken)
        => limit.Refused(context.CallContent) ? ValueTask.FromResult<object?>(limit.Refusal)
            : context.CallContent.Exception is not null ? ValueTask.FromResult<object?>(tools.ArgumentsNotJson(context.CallContent))
            : base.InvokeFunctionAsync(context, cancellationToken);

    protected override IList<ChatMessage> CreateResponseMessages(ReadOnlySpan<FunctionInvocationResult> results)
    {
        var messages = base.CreateResponseMessages(results);
        var contents = messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>().ToList();
        for (var i = 0; i < results.Length; i++)
        {
            if (results[i].Status != FunctionInvocationStatus.NotFound)
            {
                continue;
            }

            var call = results[i].CallContent;
            // One result per call, in the calls' order; by its call id should the client ever make them otherwise.
            var result = contents.Count == results.Length && contents[i].CallId == call.CallId
                ? contents[i]
                : contents.FirstOrDefault(c => c.CallId == call.CallId);
            if (result is not null)
            {
                result.Result = tools.NotOffered(call);
            }
        }

        return messages;
    }
}
