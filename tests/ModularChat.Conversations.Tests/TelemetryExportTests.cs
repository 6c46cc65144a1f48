using System.Net;
using System.Text.Json;
using ModularChat.Testing.Fakes;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// The Host, run as its own process with the variables an operator sets, exports its traces, metrics and logs to a real
/// OTLP collector on loopback: over the protocol configured, to each signal's path under the endpoint, with the headers of
/// OTEL_EXPORTER_OTLP_HEADERS, and without the secrets of the requests it served.
/// </summary>
[Collection(ProcessesCollection.Name)]
public sealed class TelemetryExportTests(ConversationsProcessesApp app)
{
    private const string CollectorAuthorization = "Bearer collector-secret";

    [Theory]
    // The standard variables alone: gRPC by default.
    [InlineData(null, null, false)]
    // OTLP/HTTP by the standard variable: the SDK adds /v1/traces, /v1/metrics and /v1/logs to the endpoint.
    [InlineData("http/protobuf", null, false)]
    // ModularChat's own settings win over the standard variable; paths are added under an endpoint's own path too
    // (hosted collectors have one, e.g. https://otlp.example.com/otlp).
    [InlineData("grpc", "http/protobuf", true)]
    public async Task Traces_metrics_and_logs_reach_an_otlp_collector_with_its_headers_and_without_secrets(
        string? otelProtocol, string? ownProtocol, bool ownEndpoint)
    {
        var grpc = (ownProtocol ?? otelProtocol ?? "grpc") == "grpc";
        await using var collector = await FakeOtlpCollector.StartAsync(grpc);
        await using var model = await FakeOpenAiServer.StartAsync();
        var basePath = ownEndpoint ? "/otlp" : "";
        var serviceName = "modularchat-otlp-" + Guid.NewGuid().ToString("N")[..8];
        var environment = new Dictionary<string, string>
        {
            [ownEndpoint ? "OpenTelemetry__OtlpEndpoint" : "OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.BaseUrl + basePath.TrimStart('/'),
            ["OTEL_EXPORTER_OTLP_HEADERS"] = "authorization=" + CollectorAuthorization,
            ["OpenTelemetry__ServiceName"] = serviceName,
            // Export within a fraction of a second rather than the SDK's 5 s (spans, logs) and 60 s (metrics).
            ["OTEL_BSP_SCHEDULE_DELAY"] = "200",
            ["OTEL_BLRP_SCHEDULE_DELAY"] = "200",
            ["OTEL_METRIC_EXPORT_INTERVAL"] = "500",
            ["OutboundNetwork__AllowPrivateNetworks"] = "true", // the fake model is on loopback
        };
        if (otelProtocol is not null)
        {
            environment["OTEL_EXPORTER_OTLP_PROTOCOL"] = otelProtocol;
        }

        if (ownProtocol is not null)
        {
            environment["OpenTelemetry__OtlpProtocol"] = ownProtocol;
        }

        await using var host = await app.StartHostProcessAsync(environment);

        // Real requests carrying secrets: the bearer token on each, a provider's API key sent on to the model.
        var token = app.Token(ModularChatApp.NewUser());
        var apiKey = "sk-live-" + Guid.NewGuid().ToString("N");
        using var client = host.Client(token);
        var conversation = await client.NewConversation();
        Assert.Equal(HttpStatusCode.Created, (await client.PostJson($"/api/conversations/{conversation.Id}/messages",
            new { role = "user", content = "hello" })).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await client.PostJson("/api/providers", new
        {
            name = "model", kind = "openai-compatible", endpoint = model.BaseUrl.ToString(), chatModel = "fake-model", apiKey,
        })).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.PostJson($"/api/conversations/{conversation.Id}/chat", new { content = "hi" })).StatusCode);
        Assert.Contains(model.Requests, r => r.Authorization == "Bearer " + apiKey); // the key was really used

        var paths = collector.SignalPaths(basePath);
        var exports = await Eventually.Until(() => Task.FromResult(collector.Exports.ToList()), received =>
                Has(received, paths[0], serviceName, "POST /api/conversations/{id}/messages", "chat turn")
                && Has(received, paths[1], serviceName, "modularchat.messages.appended")
                && Has(received, paths[2], serviceName, "Application started"),
            seconds: Eventually.BackgroundSeconds, what: $"Traces, metrics and logs at {string.Join(", ", paths)}");

        Assert.All(exports, e => Assert.Contains(e.Path, paths));
        Assert.All(exports, e => Assert.Equal(CollectorAuthorization, e.Authorization));
        Assert.Empty(exports.Where(e => e.Contains(token)).Select(e => e.Path)); // where the bearer token went, if anywhere
        Assert.Empty(exports.Where(e => e.Contains(apiKey)).Select(e => e.Path));
    }

    [Fact]
    public async Task An_idle_node_exports_no_spans_of_its_background_database_polling_and_a_request_keeps_its_database_spans()
    {
        await using var collector = await FakeOtlpCollector.StartAsync(grpc: false);
        var serviceName = "modularchat-idle-" + Guid.NewGuid().ToString("N")[..8];
        var database = await app.DatabaseOfItsOwnAsync("telemetry_idle");
        await using var host = await app.StartHostProcessAsync(new Dictionary<string, string>
        {
            ["OpenTelemetry__OtlpEndpoint"] = collector.BaseUrl.ToString(),
            ["OpenTelemetry__OtlpProtocol"] = "http/protobuf",
            ["OpenTelemetry__ServiceName"] = serviceName,
            ["OTEL_BSP_SCHEDULE_DELAY"] = "200",
            // Alone on its database: the shared one may hold messages of another test's node, which this one would recover
            // and handle while it should be idle.
            ["ConnectionStrings__Postgres"] = database,
        });
        var traces = collector.SignalPaths()[0];
        var user = ModularChatApp.NewUser();
        using var client = host.Client(app.Token(user));
        var conversation = await client.NewConversation();
        Assert.Equal(HttpStatusCode.Created, (await client.PostJson($"/api/conversations/{conversation.Id}/messages",
            new { role = "user", content = "hello" })).StatusCode);
        // The request's database commands are spans of its trace (Marten's carry the tenant). They end before the request's
        // own span, so they may come in an earlier export than it.
        await Eventually.Until(() => Task.FromResult(collector.Exports.ToList()),
            received => received.Any(e => e.Path == traces && e.Contains("POST /api/conversations/{id}/messages"))
                        && received.Any(e => e.Path == traces && e.Contains("postgresql") && e.Contains(user)),
            seconds: Eventually.BackgroundSeconds, what: "the append's trace with its database spans");

        // Then nothing happens for a while: what the node's background work sends to the database is no trace of its own
        // (the embedding queue's claim every 0.5 s and the event store's poll sent ~100 KB of spans every 30 s).
        // First the append's own background handling ends: the node's projections start once its agents are assigned (10-20 s
        // after a start) and index the message, the embedding worker embeds it (each its own trace). A fixed 4 s ended
        // before the projections began, so the window saw neither their work nor their polling (Marten's high-water mark,
        // a span of its own every second with its commands under it, which the node then exported for as long as it ran).
        await Eventually.Until(async () => JsonDocument.Parse(await client.GetStringAsync("/api/search/status")).RootElement,
            status => status.GetProperty("upToDate").GetBoolean() && status.GetProperty("embedded").GetInt64() >= 1,
            seconds: 60, what: "the message indexed and embedded");
        // And the messages the append set off are handled (Summaries' notice of it, and what that sends on): under load the
        // node had not handled the notice by then, the durability agent recovered it from the inbox later, in the window
        // (RecoverIncomingMessagesCommand, AppendsCommitted[], summaries.verify-conversation, each with its commands).
        await Eventually.Until(() => app.PendingEnvelopesAbout([conversation.Id], database), pending => pending == 0,
            Eventually.BackgroundSeconds, "the append's messages handled");
        await Task.Delay(TimeSpan.FromSeconds(2));
        var windowStart = DateTimeOffset.UtcNow;
        await Task.Delay(TimeSpan.FromSeconds(5));
        var windowEnd = DateTimeOffset.UtcNow;

        // The window holds the spans that started in it, whenever they were exported: by the exports that arrived in it, as
        // before, an export sent late on a busy machine (the exporter's thread, this process's collector) would bring the
        // spans of the requests above into it.
        // A request after the window: once its span is in, so is every span that ended before it (the exporter sends them
        // in the order they end).
        var after = Guid.NewGuid().ToString();
        await client.GetAsync($"/api/conversations/{after}");
        var exports = await Eventually.Until(() => Task.FromResult(collector.Exports.ToList()),
            received => received.Any(e => e.Path == traces && e.Contains(after)), seconds: 60, what: "the span of the request after the window");
        var idle = exports.Where(e => e.Path == traces).SelectMany(e => e.Spans()).Where(s => s.Start >= windowStart && s.Start < windowEnd).ToList();
        if (idle.Any(s => s.Contains("postgresql")))
        {
            Assert.Fail($"Database spans started while the node was idle, among: {string.Join(", ", idle)}");
        }
    }

    private static bool Has(List<OtlpExport> exports, string path, params string[] texts)
        => texts.All(text => exports.Any(e => e.Path == path && e.Contains(text)));
}
