using System.Diagnostics;
using System.Diagnostics.Metrics;
using ModularChat.BuildingBlocks.Telemetry;

namespace ModularChat.Providers;

/// <summary>The Providers module's instruments (one set per process).</summary>
internal sealed class ProvidersMetrics
{
    private readonly Histogram<double> _llmDuration;
    private readonly Counter<long> _llmTokens;
    private readonly Counter<long> _toolCalls;
    private readonly Histogram<double> _toolCallDuration;
    private readonly Counter<long> _mcpTests;
    private readonly Histogram<double> _mcpTestDuration;
    private readonly Counter<long> _chatTurns;

    public ProvidersMetrics(IMeterFactory meters)
    {
        var meter = meters.Create(ModularChatTelemetry.SourceName);
        _llmDuration = meter.CreateHistogram<double>(MetricNames.LlmCallDuration, "s", "Duration of calls to LLM providers, by provider, model, operation and outcome");
        _llmTokens = meter.CreateCounter<long>(MetricNames.LlmTokens, "{token}", "Tokens the providers reported, by provider, model and direction (input/output)");
        _toolCalls = meter.CreateCounter<long>(MetricNames.McpToolCalls, "{call}", "MCP tool calls, by server, tool and outcome");
        _toolCallDuration = meter.CreateHistogram<double>(MetricNames.McpToolCallDuration, "s", "Duration of MCP tool calls");
        _mcpTests = meter.CreateCounter<long>(MetricNames.McpTests, "{test}", "MCP server tests, by transport and outcome");
        _mcpTestDuration = meter.CreateHistogram<double>(MetricNames.McpTestDuration, "s", "Duration of MCP server tests (connect, handshake, tool listing)");
        _chatTurns = meter.CreateCounter<long>(MetricNames.ChatTurns, "{turn}", "Chat turns, by outcome and whether streamed");
    }

    public void LlmCall(string provider, string model, string operation, bool ok, TimeSpan duration, long? inputTokens, long? outputTokens)
    {
        var tags = new TagList { { "provider", provider }, { "model", model }, { "operation", operation }, { "outcome", ok ? "ok" : "error" } };
        _llmDuration.Record(duration.TotalSeconds, tags);
        if (inputTokens is > 0)
        {
            _llmTokens.Add(inputTokens.Value, new TagList { { "provider", provider }, { "model", model }, { "direction", "input" } });
        }

        if (outputTokens is > 0)
        {
            _llmTokens.Add(outputTokens.Value, new TagList { { "provider", provider }, { "model", model }, { "direction", "output" } });
        }
    }

    public void ToolCall(string server, string tool, bool ok, TimeSpan duration)
    {
        var tags = new TagList { { "server", server }, { "tool", tool }, { "outcome", ok ? "ok" : "error" } };
        _toolCalls.Add(1, tags);
        _toolCallDuration.Record(duration.TotalSeconds, tags);
    }

    public void McpTest(string transport, bool ok, TimeSpan duration)
    {
        var tags = new TagList { { "transport", transport }, { "outcome", ok ? "ok" : "error" } };
        _mcpTests.Add(1, tags);
        _mcpTestDuration.Record(duration.TotalSeconds, tags);
    }

    public void ChatTurn(string outcome, bool streamed)
        => _chatTurns.Add(1, new TagList { { "outcome", outcome }, { "streamed", streamed } });
}
