using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using ModularChat.Host.Nodes;

namespace ModularChat.Conversations.Tests;

/// <summary>What a node's settings fingerprint holds, and what a node logs about the others (without a host).</summary>
public sealed class NodeSettingsTests
{
    [Theory]
    [InlineData("ApiKey")]
    [InlineData("MasterKey")]
    [InlineData("SigningKey")]
    [InlineData("PreviousMasterKeys")]
    [InlineData("AccessToken")]
    [InlineData("ClientSecret")]
    [InlineData("SecretHeaders")]
    [InlineData("Password")]
    [InlineData("DbPasswordFile")]
    [InlineData("Credentials")]
    [InlineData("ConnectionString")]
    public void A_setting_named_like_a_secret_is_a_secret(string name) => Assert.True(ModularChat.BuildingBlocks.Security.SecretSettings.IsSecretName(name));

    [Theory]
    [InlineData("RedisKeyPrefix")]
    [InlineData("MaxApiKeyLength")]
    [InlineData("TokenThreshold")]
    [InlineData("MaxSummaryTokens")]
    [InlineData("TokensPerMessage")]
    [InlineData("Milestones")]
    [InlineData("Policy")]
    [InlineData("SpeakerMetadataKeys")]
    public void A_setting_that_only_mentions_keys_or_tokens_is_compared(string name) => Assert.False(ModularChat.BuildingBlocks.Security.SecretSettings.IsSecretName(name));

    [Fact]
    public void Secrets_and_a_urls_credentials_change_no_hash_and_every_other_value_changes_its_sections()
    {
        var baseline = new Dictionary<string, string?>
        {
            ["Summaries:Milestones"] = "10,25",
            ["Summaries:Llm:Endpoint"] = "https://llm.example/v1",
            ["Summaries:Llm:ApiKey"] = "one",
            ["Summaries:Variants:b:Llm:ApiKey"] = "one",
            ["Summaries:JobParallelism"] = "3",
            ["Retention:Policy"] = "keep-all",
            ["Cache:RedisKeyPrefix"] = "a:",
            ["Cache:RedisRetryInterval"] = "00:00:05",
            ["Auth:SigningKey"] = "one",
            ["ConnectionStrings:Postgres"] = "Host=a;Password=one",
        };
        var hashes = Hashes(baseline);
        Assert.Equal(SettingsFingerprint.Sections.Order(StringComparer.Ordinal), hashes.Keys);

        // Secrets, a URL's user and query, a node's own sizing, and what is not compared at all: the same hashes.
        Assert.Empty(SettingsFingerprint.Differences(hashes, Hashes(baseline, new()
        {
            ["Summaries:Llm:ApiKey"] = "two",
            ["Summaries:Variants:b:Llm:ApiKey"] = "two",
            ["Summaries:Llm:Endpoint"] = "https://user:two@llm.example/v1?api-key=two",
            ["Summaries:JobParallelism"] = "8",
            ["Summaries:MaxJobsPerTenant"] = "4",
            ["Cache:RedisRetryInterval"] = "00:00:09",
            ["Auth:SigningKey"] = "two",
            ["ConnectionStrings:Postgres"] = "Host=a;Password=two",
        })));

        Assert.Equal(["Cache:RedisKeyPrefix", "Retention", "Summaries"], SettingsFingerprint.Differences(hashes, Hashes(baseline, new()
        {
            ["Summaries:Llm:Endpoint"] = "https://other.example/v1",
            ["Retention:Policy"] = "delete-after-summary",
            ["Cache:RedisKeyPrefix"] = "b:",
        })));
        Assert.Equal(["Search"], SettingsFingerprint.Differences(hashes, Hashes(baseline, new() { ["Search:VectorIndex:Precision"] = "Float32" })));
        Assert.Equal(["Search"], SettingsFingerprint.Differences(hashes, Hashes(baseline, new() { ["Search:SpeakerMetadataKeys:0"] = "author" })));
    }

    [Fact]
    public void A_difference_is_warned_about_once_per_set_of_sections_and_agreeing_again_and_another_version_are_said_once()
    {
        var logs = new CapturedLogs();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs));
        var log = new PeerSettingsLog(factory.CreateLogger<PeerSettingsLog>());
        var self = Node(Guid.NewGuid(), "1.0", ("Retention", "a"), ("Summaries", "a"));
        var other = Node(Guid.NewGuid(), "1.0", ("Retention", "b"), ("Summaries", "a"));
        var stale = TimeSpan.FromMinutes(1);

        log.Observe(self, [self, other], stale);
        log.Observe(self, [self, other], stale);
        Assert.Equal([(LogLevel.Warning, "in Retention:")], Said());

        log.Observe(self, [self, other with { Settings = Hashes(("Retention", "b"), ("Summaries", "b")) }], stale);
        log.Observe(self, [self, other with { Settings = self.Settings, Version = "1.1" }], stale);
        log.Observe(self, [self, other with { Settings = self.Settings, Version = "1.1" }], stale);
        log.Observe(self, [self], stale);
        Assert.Equal(
            [
                (LogLevel.Warning, "in Retention:"), (LogLevel.Warning, "in Retention, Summaries:"), (LogLevel.Information, "same settings as this node again"),
                (LogLevel.Information, "runs version 1.1, this node 1.0"), (LogLevel.Information, "is gone"),
            ],
            Said());

        List<(LogLevel, string)> Said() => logs.Entries.Select(e => (e.Level, new[]
            {
                "in Retention:", "in Retention, Summaries:", "same settings as this node again", "runs version 1.1, this node 1.0", "is gone", "is live",
            }.Single(p => e.Message.Contains(p, StringComparison.Ordinal)))).ToList();
    }

    private static IReadOnlyDictionary<string, string> Hashes(Dictionary<string, string?> settings, Dictionary<string, string?>? changes = null)
        => SettingsFingerprint.Compute(new ConfigurationBuilder().AddInMemoryCollection(settings).AddInMemoryCollection(changes ?? []).Build());

    private static Dictionary<string, string> Hashes(params (string Section, string Hash)[] sections) => sections.ToDictionary(s => s.Section, s => s.Hash);

    private static NodeRecord Node(Guid id, string version, params (string Section, string Hash)[] sections)
        => new(id, 1, "machine", 1, version, DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch, Hashes(sections), []);
}
