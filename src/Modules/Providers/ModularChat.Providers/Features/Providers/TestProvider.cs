using System.Diagnostics;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Providers.Clients;
using ModularChat.BuildingBlocks.Validation;

namespace ModularChat.Providers.Features.Providers;

/// <summary>The outcome of a provider test: it always answers 200; <see cref="Success"/> tells whether the provider did.</summary>
/// <param name="Answer">The model's answer (cut at 500 characters), without control characters other than tabs and line breaks.</param>
/// <param name="Error">Why the call failed, with the provider's HTTP status when it answered (a 401 means a bad key).</param>
public sealed record ProviderTestResult(
    bool Success, string Provider, string Model, double LatencyMs, string? Answer, long? InputTokens, long? OutputTokens, ProviderTestError? Error);

/// <summary>A failed provider test: the provider's status (when it answered) and its message, scrubbed of credentials.</summary>
public sealed record ProviderTestError(int? ProviderStatus, string Message);

internal sealed record TestProvider(Guid Id) : ICommand<ProviderTestResult>;

internal sealed partial class TestProviderHandler(
    TenantSessions sessions, ProviderDirectory directory, ModelClients clients, IOptions<ProvidersOptions> options, TimeProvider clock,
    ILogger<TestProviderHandler> logger)
    : ICommandHandler<TestProvider, ProviderTestResult>
{
    public async ValueTask<ProviderTestResult> Handle(TestProvider command, CancellationToken cancellationToken)
    {
        var all = await directory.GetAllAsync(sessions.TenantId, cancellationToken);
        var provider = all.FirstOrDefault(p => p.Id == command.Id) ?? throw new NotFoundException("Provider", command.Id);
        var model = provider.ChatModel;
        var timeout = options.Value.TestTimeout;
        using var activity = ModularChatTelemetry.ActivitySource.StartActivity("provider test");
        activity?.SetTag("modularchat.provider", ModelClients.Label(provider));
        using var deadline = new ClockDeadline(timeout, clock, cancellationToken);
        var started = Stopwatch.GetTimestamp();
        try
        {
            var client = clients.Chat(provider, model, timeout);
            var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, options.Value.TestPrompt)], cancellationToken: deadline.Token);
            var latency = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            var answer = Printable(response.Text).Trim();
            LogTested(logger, provider.Name, ModelClients.Label(provider), "succeeded", latency);
            return new ProviderTestResult(true, provider.Name, model, latency, StorableText.Prefix(answer, 500),
                response.Usage?.InputTokenCount, response.Usage?.OutputTokenCount, null);
        }
        catch (Exception e) when (ModelCallException.From(e, provider, model, cancellationToken) is { } failure)
        {
            var latency = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            activity?.SetStatus(ActivityStatusCode.Error, failure.ProviderStatus?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "unreachable");
            LogTested(logger, provider.Name, ModelClients.Label(provider), "failed", latency);
            var message = e is OperationCanceledException && !cancellationToken.IsCancellationRequested
                ? $"Provider '{provider.Name}' did not answer within {timeout.TotalSeconds:0.#} s (Providers:TestTimeout)."
                : failure.Message;
            return new ProviderTestResult(false, provider.Name, model, latency, null, null, null, new ProviderTestError(failure.ProviderStatus, message));
        }
    }

    /// <summary>
    /// The model's text as a client can show it: without the C0 control characters (a NUL, an escape sequence's ESC)
    /// other than tabs and line breaks, which a remote model may send and a terminal or page would act on.
    /// </summary>
    private static string Printable(string text)
        => text.Any(IsUnprintable) ? string.Concat(text.Where(c => !IsUnprintable(c))) : text;

    private static bool IsUnprintable(char c) => c < ' ' && c is not ('\t' or '\n' or '\r');

    [LoggerMessage(Level = LogLevel.Information, Message = "Provider test of {Provider} ({Label}) {Outcome} in {LatencyMs:0} ms")]
    private static partial void LogTested(ILogger logger, string provider, string label, string outcome, double latencyMs);
}

internal static class TestProviderEndpoint
{
    public static void MapTestProvider(this IEndpointRouteBuilder group) =>
        group.MapPost("/{id}/test", async Task<Ok<ProviderTestResult>> (Guid id, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new TestProvider(id), ct)))
            .WithName("TestProvider")
            .WithSummary("Make a minimal real call to the provider")
            .WithDescription("Reports success, latency and the model's answer, or the provider's error (a 401 is reported, not thrown).")
            .ProducesProblem(StatusCodes.Status404NotFound);
}
