using System.ClientModel;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Providers.Contracts;
using ModularChat.Testing.Fakes;
using OpenAI;

namespace ModularChat.Summaries.Tests;

/// <summary>
/// The shared host of this assembly: fast retries, no scheduled sweep, a fake OpenAI-compatible server on loopback as the
/// global LLM endpoint, and one tenant per variant under test.
/// </summary>
public sealed class SummariesApp : ModularChatApp
{
    /// <summary>Tenants on the <c>llm</c> variant (global endpoint = <see cref="Llm"/>).</summary>
    public string LlmTenant { get; } = NewUser("llm");

    /// <summary>Tenants on the <c>llm</c> variant that read 4 messages at a time.</summary>
    public string ChunkedLlmTenant { get; } = NewUser("llm-chunks");

    /// <summary>A tenant whose summaries are due by tokens only (milestones out of reach, threshold 60 tokens).</summary>
    public string TokensTenant { get; } = NewUser("tokens");

    /// <summary>A tenant whose automatic summaries are at least an hour apart.</summary>
    public string PatientTenant { get; } = NewUser("patient");

    /// <summary>A tenant with its own LLM provider (through <see cref="ITenantAiClients"/>), on the default (extractive) variant.</summary>
    public string ProviderTenant { get; } = NewUser("provider");

    /// <summary>A tenant whose provider cannot be used: its stored key no longer decrypts (the Providers module then answers 409).</summary>
    public string BrokenProviderTenant { get; } = NewUser("broken-provider");

    /// <summary>A tenant whose covered messages are archived (archive-after-summary), all but the last 5.</summary>
    public string ArchiveTenant { get; } = NewUser("archive");

    /// <summary>A tenant whose covered messages are deleted (delete-after-summary), all but the last 5.</summary>
    public string DeleteTenant { get; } = NewUser("delete");

    /// <summary>A tenant whose covered messages are all archived (archive-after-summary, KeepLast 0).</summary>
    public string ArchiveAllTenant { get; } = NewUser("archive-all");

    /// <summary>A tenant whose covered messages are all deleted (delete-after-summary, KeepLast 0).</summary>
    public string DeleteAllTenant { get; } = NewUser("delete-all");

    /// <summary>Like <see cref="DeleteAllTenant"/>, for the one test that counts what a sweep of it queues besides the others'.</summary>
    public string DeleteAllClaimedTenant { get; } = NewUser("delete-all-claimed");

    /// <summary>A tenant due by tokens only (as <see cref="TokensTenant"/>) whose covered messages are archived, all but the last 5.</summary>
    public string TokensArchiveTenant { get; } = NewUser("tokens-archive");

    /// <summary>The key of the global summary model (<c>Summaries:Llm:ApiKey</c>).</summary>
    public const string GlobalKey = "global-key-5f1c9a";

    public FakeOpenAiServer Llm { get; private set; } = null!;

    /// <summary>What the hosts log, every level.</summary>
    public CapturedLogs Logs { get; } = new();

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Summaries:MinInterval"] = "00:00:00",
        ["Summaries:RetryDelays"] = "00:00:00.300,00:00:00.600",
        ["Summaries:EventBatchWindow"] = "00:00:00.050",
        ["Summaries:Sweep:Interval"] = "00:00:00",
        ["Summaries:Sweep:JobWait"] = "00:00:30",
        ["Summaries:Sweep:NoticeSettle"] = "00:00:00",
        ["Summaries:BacklogRefreshInterval"] = "00:00:01",
        ["Summaries:Llm:Endpoint"] = Llm.BaseUrl.ToString(),
        ["Summaries:Llm:ApiKey"] = GlobalKey,
        ["Summaries:Llm:Model"] = "fake-summary-model",
        ["Summaries:Llm:Timeout"] = "00:00:08",
        ["Summaries:Variants:llm:Summarizer"] = "llm",
        ["Summaries:Variants:llm:MaxSummaryTokens"] = "60",
        ["Summaries:Variants:llm-chunks:Summarizer"] = "llm",
        ["Summaries:Variants:llm-chunks:ChunkSize"] = "4",
        ["Summaries:Variants:tokens:Milestones"] = "100000",
        ["Summaries:Variants:tokens:TokenThreshold"] = "60",
        ["Summaries:Variants:patient:MinInterval"] = "01:00:00",
        [$"Summaries:TenantVariants:{LlmTenant}"] = "llm",
        [$"Summaries:TenantVariants:{ChunkedLlmTenant}"] = "llm-chunks",
        [$"Summaries:TenantVariants:{TokensTenant}"] = "tokens",
        [$"Summaries:TenantVariants:{PatientTenant}"] = "patient",
        [$"Summaries:TenantVariants:{TokensArchiveTenant}"] = "tokens",
        [$"Retention:Tenants:{ArchiveTenant}:Policy"] = "archive-after-summary",
        [$"Retention:Tenants:{ArchiveTenant}:KeepLast"] = "5",
        [$"Retention:Tenants:{DeleteTenant}:Policy"] = "delete-after-summary",
        [$"Retention:Tenants:{DeleteTenant}:KeepLast"] = "5",
        [$"Retention:Tenants:{ArchiveAllTenant}:Policy"] = "archive-after-summary",
        [$"Retention:Tenants:{ArchiveAllTenant}:KeepLast"] = "0",
        [$"Retention:Tenants:{DeleteAllTenant}:Policy"] = "delete-after-summary",
        [$"Retention:Tenants:{DeleteAllTenant}:KeepLast"] = "0",
        [$"Retention:Tenants:{DeleteAllClaimedTenant}:Policy"] = "delete-after-summary",
        [$"Retention:Tenants:{DeleteAllClaimedTenant}:KeepLast"] = "0",
        [$"Retention:Tenants:{TokensArchiveTenant}:Policy"] = "archive-after-summary",
        [$"Retention:Tenants:{TokensArchiveTenant}:KeepLast"] = "5",
    };

    public override async Task InitializeAsync()
    {
        Llm = await FakeOpenAiServer.StartAsync();
        Llm.RequiredApiKey = null;
        await base.InitializeAsync();
    }

    protected override void ConfigureServices(IServiceCollection services)
    {
        services.AddSingleton<ITenantAiClients>(new OneTenantWithAProvider(this));
        services.AddSingleton<Microsoft.Extensions.Logging.ILoggerProvider>(Logs);
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Llm.DisposeAsync();
    }

    /// <summary>
    /// Stands in for the Providers module (built separately): <see cref="ProviderTenant"/> has a provider whose summary model
    /// is "tenant-model" on the fake server; no other tenant has one.
    /// </summary>
    private sealed class OneTenantWithAProvider(SummariesApp app) : ITenantAiClients
    {
        public Task<TenantChatClient?> GetChatClientAsync(string tenantId, AiPurpose purpose, string? providerName = null, CancellationToken cancellationToken = default)
        {
            if (tenantId == app.BrokenProviderTenant)
            {
                throw new ModularChat.BuildingBlocks.Errors.ConflictException(
                    "The API key stored for provider 'tenant-openai' cannot be decrypted with the service's current keys.");
            }

            if (tenantId != app.ProviderTenant || purpose != AiPurpose.Summary)
            {
                return Task.FromResult<TenantChatClient?>(null);
            }

            var client = new OpenAI.Chat.ChatClient("tenant-model", new ApiKeyCredential("tenant-key"), new OpenAIClientOptions { Endpoint = app.Llm.BaseUrl })
                .AsIChatClient();
            return Task.FromResult<TenantChatClient?>(new TenantChatClient(client, "tenant-openai", "tenant-model"));
        }

        public Task<TenantEmbeddingGenerator?> GetEmbeddingGeneratorAsync(string tenantId, CancellationToken cancellationToken = default)
            => Task.FromResult<TenantEmbeddingGenerator?>(null);
    }
}

[CollectionDefinition(Name)]
public sealed class AppCollection : ICollectionFixture<SummariesApp>
{
    public const string Name = "summaries";
}
