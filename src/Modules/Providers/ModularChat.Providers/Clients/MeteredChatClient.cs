using System.Diagnostics;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using ModularChat.BuildingBlocks.Telemetry;

namespace ModularChat.Providers.Clients;

/// <summary>
/// Measures every call to the model: duration, tokens in and out by provider and model, and a span per call.
/// Below function invocation, so each round of a tool-using turn is one call. Records no content and no key.
/// A token count below 0 is no count: it is taken out of the usage (null, unknown) before anything reads it, and so is
/// the total that counted it.
/// </summary>
internal sealed class MeteredChatClient(IChatClient inner, string provider, string model, ProvidersMetrics metrics) : DelegatingChatClient(inner)
{
    public override async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var activity = Start("chat");
        var started = Stopwatch.GetTimestamp();
        try
        {
            var response = await base.GetResponseAsync(messages, options, cancellationToken);
            Counted(response.Usage);
            Record(activity, started, ok: true, response.Usage, "chat");
            return response;
        }
        catch (Exception e)
        {
            Record(activity, started, ok: false, null, "chat", e);
            throw;
        }
    }

    public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var activity = Start("chat.stream");
        var started = Stopwatch.GetTimestamp();
        UsageDetails? usage = null;
        var ok = false;
        try
        {
            await foreach (var update in base.GetStreamingResponseAsync(messages, options, cancellationToken))
            {
                foreach (var content in update.Contents)
                {
                    if (content is UsageContent u)
                    {
                        Counted(u.Details);
                        (usage ??= new UsageDetails()).Add(u.Details);
                    }
                }

                yield return update;
            }

            ok = true;
        }
        finally
        {
            Record(activity, started, ok, usage, "chat.stream");
        }
    }

    /// <summary>Takes out of <paramref name="usage"/> the counts below 0 a provider reported, and the total when it counted one.</summary>
    private static void Counted(UsageDetails? usage)
    {
        if (usage is null)
        {
            return;
        }

        if (usage.InputTokenCount < 0 || usage.OutputTokenCount < 0 || usage.TotalTokenCount < 0)
        {
            usage.TotalTokenCount = null;
        }

        usage.InputTokenCount = usage.InputTokenCount < 0 ? null : usage.InputTokenCount;
        usage.OutputTokenCount = usage.OutputTokenCount < 0 ? null : usage.OutputTokenCount;
    }

    private Activity? Start(string operation)
    {
        var activity = ModularChatTelemetry.ActivitySource.StartActivity("llm " + operation, ActivityKind.Client);
        activity?.SetTag("gen_ai.operation.name", "chat");
        activity?.SetTag("gen_ai.request.model", model);
        activity?.SetTag("modularchat.provider", provider);
        return activity;
    }

    private void Record(Activity? activity, long started, bool ok, UsageDetails? usage, string operation, Exception? error = null)
    {
        metrics.LlmCall(provider, model, operation, ok, Stopwatch.GetElapsedTime(started), usage?.InputTokenCount, usage?.OutputTokenCount);
        if (activity is null)
        {
            return;
        }

        activity.SetTag("gen_ai.usage.input_tokens", usage?.InputTokenCount);
        activity.SetTag("gen_ai.usage.output_tokens", usage?.OutputTokenCount);
        if (!ok)
        {
            // The exception's type only: provider messages can echo what we sent.
            activity.SetStatus(ActivityStatusCode.Error, error?.GetType().Name ?? "cancelled");
        }
    }
}
