namespace ModularChat.Host.Nodes;

/// <summary>
/// What this node tells its log about the other live nodes, each time it has read them: a node that came or went, a
/// node whose settings differ from this one's (a warning, naming the sections only), and a node on another version
/// (information: normal while a rolling upgrade goes through). Each is said once, when it becomes true, not at every
/// check: a lasting difference is one warning per node and set of sections, and agreeing again is said too.
/// </summary>
/// <remarks>Only the heartbeat calls it, one check at a time.</remarks>
internal sealed partial class PeerSettingsLog(ILogger<PeerSettingsLog> logger)
{
    /// <summary>The other live nodes at the last check, with the sections found to differ (empty when they agree).</summary>
    private readonly Dictionary<Guid, (NodeRecord Node, string Differences)> _known = [];

    public void Observe(NodeRecord self, IReadOnlyList<NodeRecord> live, TimeSpan staleAfter)
    {
        var others = live.Where(n => n.Id != self.Id).ToList();
        foreach (var node in others)
        {
            var differences = string.Join(", ", SettingsFingerprint.Differences(self.Settings, node.Settings));
            var seen = _known.TryGetValue(node.Id, out var before);
            if (differences.Length > 0 && (!seen || before.Differences != differences))
            {
                if (node.Version == self.Version)
                {
                    LogSettingsDiffer(logger, node.Machine, node.Id, differences, node.Version);
                }
                else
                {
                    LogSettingsDifferDuringUpgrade(logger, node.Machine, node.Id, differences, node.Version, self.Version);
                }
            }
            else if (differences.Length == 0 && !seen)
            {
                LogJoined(logger, node.Machine, node.Id, node.Version);
            }
            else if (differences.Length == 0 && before.Differences.Length > 0)
            {
                LogSettingsAgree(logger, node.Machine, node.Id);
            }

            if (node.Version != self.Version && (!seen || before.Node.Version != node.Version))
            {
                LogVersionDiffers(logger, node.Machine, node.Id, node.Version, self.Version);
            }

            _known[node.Id] = (node, differences);
        }

        foreach (var gone in _known.Keys.Except(others.Select(n => n.Id)).ToList())
        {
            LogLeft(logger, _known[gone].Node.Machine, gone, staleAfter);
            _known.Remove(gone);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Node {Machine} ({NodeId}) is live, version {Version}, with the same settings as this node")]
    private static partial void LogJoined(ILogger logger, string machine, Guid nodeId, string version);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Node {Machine} ({NodeId}) runs with other settings than this node in {Sections}: " +
                                                       "background work (summaries, retention, indexing) gives different results depending on the node " +
                                                       "that picks it up. Both run version {Version}, so this is a misconfiguration unless the settings are " +
                                                       "being changed node by node; GET /api/admin/nodes lists the differences")]
    private static partial void LogSettingsDiffer(ILogger logger, string machine, Guid nodeId, string sections, string version);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Node {Machine} ({NodeId}) runs with other settings than this node in {Sections}: " +
                                                       "background work (summaries, retention, indexing) gives different results depending on the node " +
                                                       "that picks it up. It runs version {Version}, this node {OwnVersion}: expected while a rolling upgrade " +
                                                       "changes them, a misconfiguration if it lasts; GET /api/admin/nodes lists the differences")]
    private static partial void LogSettingsDifferDuringUpgrade(ILogger logger, string machine, Guid nodeId, string sections, string version, string ownVersion);

    [LoggerMessage(Level = LogLevel.Information, Message = "Node {Machine} ({NodeId}) runs with the same settings as this node again")]
    private static partial void LogSettingsAgree(ILogger logger, string machine, Guid nodeId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Node {Machine} ({NodeId}) runs version {Version}, this node {OwnVersion}: normal during a rolling upgrade")]
    private static partial void LogVersionDiffers(ILogger logger, string machine, Guid nodeId, string version, string ownVersion);

    [LoggerMessage(Level = LogLevel.Information, Message = "Node {Machine} ({NodeId}) is gone (stopped, or silent for more than {StaleAfter})")]
    private static partial void LogLeft(ILogger logger, string machine, Guid nodeId, TimeSpan staleAfter);
}
