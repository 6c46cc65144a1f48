using System.Security.Cryptography;
using System.Text;
using ModularChat.BuildingBlocks.Security;

namespace ModularChat.Host.Nodes;

/// <summary>
/// One hash per configuration section that changes what background work produces, so that nodes sharing one database can
/// tell that they run with different settings without showing them to each other: with different milestones, retention
/// policies or vector settings, a summary, a retention step or an embedding differs by the node that happens to pick it
/// up (one node deletes what another keeps).
/// </summary>
/// <remarks>
/// What is hashed is the configuration as the node was started with it (appsettings.json, environment variables, ...),
/// key by key: a default left in code and the same value written out hash differently. Never hashed, so never stored:
/// connection strings and Auth (not listed), and any setting whose name says it is a secret (<see cref="SecretSettings.IsSecretName"/>),
/// wherever it sits in a section: the hash of a low-entropy secret can be reversed by trying candidates. A URL's user
/// information and query (where keys are sometimes passed) are left out too. Settings that size one node rather than
/// decide results (<see cref="NodeSized"/>) are left out, so nodes of different sizes do not warn.
/// </remarks>
internal static class SettingsFingerprint
{
    /// <summary>The compared sections (and single settings), in the order they are reported.</summary>
    public static IReadOnlyList<string> Sections => SectionOrder;

    private static readonly string[] SectionOrder =
    [
        "Cache:RedisKeyPrefix", "Chat", "Context", "Conversations", "Limits", "Mcp", "OutboundNetwork", "Providers", "Retention", "Search", "Summaries",
    ];

    /// <summary>Settings that size one node (work at once, memory, whether it embeds at all): nodes may differ in them.</summary>
    private static readonly HashSet<string> NodeSized = new(StringComparer.OrdinalIgnoreCase)
    {
        "Summaries:JobParallelism",
        "Summaries:MaxJobsPerTenant",
        "Summaries:ExtractiveParallelism",
        "Search:VectorIndex:MaxMemoryMegabytes",
        "Search:Embeddings:WorkerEnabled",
        "Search:Embeddings:MaxConcurrentTenants",
    };

    /// <summary>Section name to hash (16 hex digits of SHA-256 over its sorted settings) for every compared section.</summary>
    public static IReadOnlyDictionary<string, string> Compute(IConfiguration configuration)
    {
        var hashes = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var section in SectionOrder)
        {
            var lines = configuration.GetSection(section).AsEnumerable()
                .Where(s => !string.IsNullOrEmpty(s.Value) && !NodeSized.Contains(s.Key) && !SecretSettings.IsSecretPath(s.Key))
                .Select(s => $"{s.Key.ToLowerInvariant()}={SecretSettings.Scrubbed(s.Value!)}")
                .Order(StringComparer.Ordinal);
            var hash = SHA256.HashData(Encoding.UTF8.GetBytes(string.Join('\n', lines)));
            hashes[section] = Convert.ToHexStringLower(hash, 0, 8);
        }

        return hashes;
    }

    /// <summary>The sections whose hashes differ (or that only one of the two has), in <see cref="Sections"/> order.</summary>
    public static IReadOnlyList<string> Differences(IReadOnlyDictionary<string, string> mine, IReadOnlyDictionary<string, string> theirs)
        => mine.Keys.Union(theirs.Keys)
            .Where(s => !mine.TryGetValue(s, out var a) || !theirs.TryGetValue(s, out var b) || a != b)
            .OrderBy(s => Array.IndexOf(SectionOrder, s) is var i and >= 0 ? i : int.MaxValue).ThenBy(s => s, StringComparer.Ordinal)
            .ToList();
}
