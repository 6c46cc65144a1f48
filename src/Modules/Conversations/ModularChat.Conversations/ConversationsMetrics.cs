using System.Diagnostics.Metrics;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations;

/// <summary>The Conversations module's instruments (one set per process).</summary>
internal sealed class ConversationsMetrics
{
    private readonly Counter<long> _messages;
    private readonly Histogram<int> _tokens;
    private readonly Counter<long> _cacheLookups;

    public ConversationsMetrics(IMeterFactory meters)
    {
        var meter = meters.Create(ModularChatTelemetry.SourceName);
        _messages = meter.CreateCounter<long>(MetricNames.MessagesAppended, "{message}", "Messages stored, by role");
        _tokens = meter.CreateHistogram<int>(MetricNames.MessageTokens, "{token}", "o200k tokens per stored message");
        _cacheLookups = meter.CreateCounter<long>(MetricNames.CacheLookups, "{lookup}", "Cache lookups by cache and result (hit, miss)");
    }

    public void CacheLookup(string cache, bool hit)
        => _cacheLookups.Add(1, new KeyValuePair<string, object?>("cache", cache), new KeyValuePair<string, object?>("result", hit ? "hit" : "miss"));

    public void Appended(IReadOnlyList<MessageAppended> messages)
    {
        foreach (var m in messages)
        {
            var role = new KeyValuePair<string, object?>("role", MessageRoles.ToWire(m.Role));
            _messages.Add(1, role);
            _tokens.Record(m.TokenCount, role);
        }
    }
}
