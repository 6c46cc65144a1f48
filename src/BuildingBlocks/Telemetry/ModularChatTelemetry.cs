using System.Diagnostics;

namespace ModularChat.BuildingBlocks.Telemetry;

/// <summary>Names and shared sources for ModularChat's own traces and metrics.</summary>
public static class ModularChatTelemetry
{
    /// <summary>The ActivitySource and Meter name of every ModularChat module.</summary>
    public const string SourceName = "ModularChat";

    /// <summary>Traces of ModularChat's own work (module operations, background jobs).</summary>
    public static readonly ActivitySource ActivitySource = new(SourceName);
}

/// <summary>Metric names, in one place so dashboards and code agree.</summary>
public static class MetricNames
{
    public const string MessagesAppended = "modularchat.messages.appended";
    public const string MessageTokens = "modularchat.messages.tokens";
    public const string SummaryDuration = "modularchat.summaries.duration";
    public const string SummariesGenerated = "modularchat.summaries.generated";
    public const string SummaryFailures = "modularchat.summaries.failures";
    public const string SummaryLag = "modularchat.summaries.lag";
    public const string SummaryBacklog = "modularchat.summaries.backlog";
}
