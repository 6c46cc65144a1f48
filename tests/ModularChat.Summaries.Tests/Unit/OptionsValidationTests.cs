using Microsoft.Extensions.Configuration;
using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Tests.Unit;

public sealed class OptionsValidationTests
{
    private static IReadOnlyList<string> Errors(Action<SummariesOptions> change)
    {
        var options = new SummariesOptions();
        change(options);
        return new SummariesOptionsValidator().Validate(options).Errors.Select(e => $"{e.PropertyName}: {e.ErrorMessage}").ToList();
    }

    [Fact]
    public void The_defaults_are_valid()
        => Assert.Empty(Errors(_ => { }));

    [Theory]
    [InlineData("50,10", "Milestones")]
    [InlineData("10,,x", "Milestones")]
    [InlineData("0,10", "Milestones")]
    public void Milestones_must_be_positive_and_ascending(string milestones, string property)
        => Assert.Contains(Errors(o => o.Milestones = milestones), e => e.StartsWith(property, StringComparison.Ordinal));

    [Fact]
    public void Every_threshold_is_checked()
    {
        var errors = Errors(o =>
        {
            o.TokenThreshold = 0;
            o.ChunkSize = 0;
            o.MaxSummaryTokens = 5;
            o.Summarizer = "magic";
            o.RetryDelays = "00:00:05,-00:00:01";
            o.Llm.Endpoint = "not a url";
            o.JobParallelism = 0;
        });

        foreach (var property in new[] { "TokenThreshold", "ChunkSize", "MaxSummaryTokens", "Summarizer", "RetryDelays", "Llm.Endpoint", "JobParallelism" })
        {
            Assert.Contains(errors, e => e.StartsWith(property, StringComparison.Ordinal));
        }
    }

    [Theory]
    [InlineData(3, 0)]
    [InlineData(3, 1)]
    [InlineData(3, 3)]
    [InlineData(1, 1)]
    [InlineData(9, 9)]
    public void A_tenant_share_from_0_to_the_job_parallelism_is_valid(int parallelism, int share)
        => Assert.Empty(Errors(o => (o.JobParallelism, o.MaxJobsPerTenant) = (parallelism, share)));

    [Theory]
    [InlineData(3, -1)]
    [InlineData(3, 4)]
    [InlineData(1, 2)]
    public void A_tenant_share_outside_0_to_the_job_parallelism_is_refused_naming_it(int parallelism, int share)
    {
        var error = Assert.Single(Errors(o => (o.JobParallelism, o.MaxJobsPerTenant) = (parallelism, share)));
        Assert.Equal(
            $"MaxJobsPerTenant: must be between 0 and JobParallelism ({parallelism}): the jobs of one tenant that run at once on a node, " +
            "0 for one less than JobParallelism (at least 1), JobParallelism for no limit.",
            error);
    }

    [Fact]
    public void The_tenant_share_recheck_is_checked()
        => Assert.Contains(Errors(o => o.TenantShareRecheck = TimeSpan.Zero), e => e.StartsWith("TenantShareRecheck", StringComparison.Ordinal));

    [Fact]
    public void A_tenants_variant_applies_whatever_the_case_its_configuration_keys_are_written_in()
    {
        // Configuration merges keys that differ only in case; the variant is recorded under the name its section has.
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Summaries:Variants:Short:Milestones"] = "3,6",
                ["Summaries:TenantVariants:ACME"] = "SHORT",
                ["Summaries:TenantVariants:Other"] = "DEFAULT",
            })
            .Build();
        var options = new SummariesOptions();
        configuration.GetSection(SummariesOptions.Section).Bind(options);
        var resolver = new SummarySettingsResolver(Microsoft.Extensions.Options.Options.Create(options));

        Assert.Empty(new SummariesOptionsValidator().Validate(options).Errors);
        var acme = resolver.For("acme");
        Assert.Equal("Short", acme.Variant);
        Assert.Equal([3L, 6L], acme.Strategy.Milestones);
        Assert.Equal(SummariesOptions.DefaultVariant, resolver.For("other").Variant);
        Assert.Equal(SummariesOptions.DefaultVariant, resolver.For("acme-two").Variant);
    }

    [Fact]
    public void A_tenant_on_an_undefined_variant_is_refused()
    {
        var errors = Errors(o => o.TenantVariants["acme"] = "b");
        Assert.Contains(errors, e => e.Contains("'acme' is on variant 'b'", StringComparison.Ordinal));
    }

    [Fact]
    public void Variant_overrides_are_validated_like_the_defaults()
    {
        var errors = Errors(o =>
        {
            o.Variants["b"] = new SummaryVariantOptions { Summarizer = "gpt", Milestones = "5,1", ChunkSize = -1 };
            o.TenantVariants["acme"] = "b";
        });

        Assert.Equal(3, errors.Count(e => e.StartsWith("Variants", StringComparison.Ordinal)));
    }
}
