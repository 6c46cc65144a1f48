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
    public const string AppendGroupSize = "modularchat.messages.append_group.size";
    public const string AppendGroupQueued = "modularchat.messages.append_group.queued";
    public const string CacheLookups = "modularchat.cache.lookups";
    public const string RetentionMessages = "modularchat.retention.messages";
    public const string RetentionBytes = "modularchat.retention.bytes";
    public const string ConversationsBackgroundFailures = "modularchat.conversations.background_failures";
    public const string AppendRate = "modularchat.messages.append_rate";
    public const string ClusterAppendRate = "modularchat.events.cluster_append_rate";
    public const string BackgroundYield = "modularchat.background.yield.duration";
    public const string ProjectionLag = "modularchat.projections.lag";
    public const string DeadLetters = "modularchat.dead_letters";

    // Providers: LLM calls, MCP tools, chat turns.
    public const string LlmCallDuration = "modularchat.llm.call.duration";
    public const string LlmTokens = "modularchat.llm.tokens";
    public const string McpToolCalls = "modularchat.mcp.tool_calls";
    public const string McpToolCallDuration = "modularchat.mcp.tool_call.duration";
    public const string McpTests = "modularchat.mcp.tests";
    public const string McpTestDuration = "modularchat.mcp.test.duration";
    public const string ChatTurns = "modularchat.chat.turns";

    public const string SearchQueries = "modularchat.search.queries";
    public const string SearchDuration = "modularchat.search.duration";
    public const string SearchEmbeddings = "modularchat.search.embeddings";
    public const string SearchEmbeddingDuration = "modularchat.search.embedding.duration";
    public const string SearchEmbeddingFailures = "modularchat.search.embedding.failures";
    public const string SearchEmbeddingsGivenUp = "modularchat.search.embedding.given_up";
    public const string SearchIndexVectors = "modularchat.search.index.vectors";
    public const string SearchIndexBytes = "modularchat.search.index.bytes";
    public const string SearchCleanupFailures = "modularchat.search.cleanup_failures";
    public const string SummaryDuration = "modularchat.summaries.duration";
    public const string SummariesGenerated = "modularchat.summaries.generated";
    public const string SummaryFailures = "modularchat.summaries.failures";
    public const string SummaryParts = "modularchat.summaries.parts";
    public const string SummaryLag = "modularchat.summaries.lag";
    public const string SummaryBacklog = "modularchat.summaries.backlog";
    public const string SummaryDeferrals = "modularchat.summaries.deferrals";
    public const string SummaryNoticeFailures = "modularchat.summaries.notice_failures";
    public const string SummaryCleanupFailures = "modularchat.summaries.cleanup_failures";
}
