using System.Diagnostics.Metrics;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations;

/// <summary>The Conversations module's instruments (one set per process).</summary>
public sealed class ConversationsMetrics
{
    private readonly Counter<long> _messages;
    private readonly Histogram<int> _tokens;
    private readonly Counter<long> _cacheLookups;
    private readonly Counter<long> _retainedMessages;
    private readonly Counter<long> _retainedBytes;
    private readonly Histogram<int> _appendGroups;
    private readonly UpDownCounter<int> _appendQueue;
    private readonly Counter<long> _backgroundFailures;

    public ConversationsMetrics(IMeterFactory meters)
    {
        var meter = meters.Create(ModularChatTelemetry.SourceName);
        _messages = meter.CreateCounter<long>(MetricNames.MessagesAppended, "{message}", "Messages stored, by role");
        _tokens = meter.CreateHistogram<int>(MetricNames.MessageTokens, "{token}", "o200k tokens per stored message");
        _cacheLookups = meter.CreateCounter<long>(MetricNames.CacheLookups, "{lookup}", "Cache lookups by cache and result (hit, miss)");
        _retainedMessages = meter.CreateCounter<long>(MetricNames.RetentionMessages, "{message}", "Messages archived or deleted by retention, by action and policy");
        _retainedBytes = meter.CreateCounter<long>(MetricNames.RetentionBytes, "By", "Content bytes archived or deleted by retention, by action and policy");
        _appendGroups = meter.CreateHistogram<int>(MetricNames.AppendGroupSize, "{request}", "Append requests written by one transaction (group commit)");
        _appendQueue = meter.CreateUpDownCounter<int>(MetricNames.AppendGroupQueued, "{request}", "Append requests waiting for a transaction (group commit)");
        _backgroundFailures = meter.CreateCounter<long>(MetricNames.ConversationsBackgroundFailures, "{message}",
            "Background messages given up (outcome: dead_letter, after Messaging:MaxAttemptsWhileDatabaseAnswers database errors while the database answered, " +
            "or the retries of any other failure), " +
            "by work (retention: a retention step; purge: a deleted conversation's stream) and error (the exception's type)");
    }

    internal void RetentionApplied(RetentionApplied applied)
    {
        KeyValuePair<string, object?>[] tags = [new("action", applied.Action.ToString().ToLowerInvariant()), new("policy", applied.Policy)];
        _retainedMessages.Add(applied.Messages, tags);
        _retainedBytes.Add(applied.Bytes, tags);
    }

    /// <summary>A background message of <paramref name="work"/> (retention, purge) dead-lettered after <paramref name="error"/>.</summary>
    internal void BackgroundFailed(string work, string error)
        => _backgroundFailures.Add(1, new KeyValuePair<string, object?>("work", work), new KeyValuePair<string, object?>("error", error),
            new KeyValuePair<string, object?>("outcome", IDeadLetterReport.Outcome));

    internal void CacheLookup(string cache, bool hit)
        => _cacheLookups.Add(1, new KeyValuePair<string, object?>("cache", cache), new KeyValuePair<string, object?>("result", hit ? "hit" : "miss"));

    internal void AppendGroup(int requests) => _appendGroups.Record(requests);

    internal void AppendQueue(int change) => _appendQueue.Add(change);

    internal void Appended(IReadOnlyList<MessageAppended> messages)
    {
        foreach (var m in messages)
        {
            var role = new KeyValuePair<string, object?>("role", MessageRoles.ToWire(m.Role));
            _messages.Add(1, role);
            _tokens.Record(m.TokenCount, role);
        }
    }
}
