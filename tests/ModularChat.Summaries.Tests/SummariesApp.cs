using Microsoft.Extensions.DependencyInjection;
using ModularChat.Testing.Fakes;

namespace ModularChat.Summaries.Tests;

/// <summary>
/// The shared host of this assembly: fast retries, no scheduled sweep, a fake OpenAI-compatible server on loopback as the
/// global LLM endpoint, and one tenant per variant under test.
/// </summary>
public sealed class SummariesApp : ModularChatApp
{
    /// <summary>Tenants on the <c>llm</c> variant (global endpoint = <see cref="Llm"/>).</summary>
    public string LlmTenant { get; } = NewUser("llm");

    /// <summary>
    /// Tenants on the <c>llm</c> variant that read 4 messages at a time. Its id holds <see cref="LlmTenant"/>'s (a tenant's
    /// failed jobs are found by their envelope's text, then checked: the other tenant's must not be taken for its own).
    /// </summary>
    public string ChunkedLlmTenant => LlmTenant + "-chunks";

    /// <summary>A tenant whose summaries are due by tokens only (milestones out of reach, threshold 60 tokens).</summary>
    public string TokensTenant { get; } = NewUser("tokens");

    /// <summary>A tenant whose automatic summaries are at least an hour apart.</summary>
    public string PatientTenant { get; } = NewUser("patient");

    /// <summary>
    /// A tenant with its own LLM provider (<see cref="TenantProvider"/>, set up through <c>POST /api/providers</c>: summary
    /// model "tenant-model" on <see cref="Llm"/>, key "tenant-key"), on the default (extractive) variant.
    /// </summary>
    public string ProviderTenant { get; } = NewUser("provider");

    /// <summary>
    /// A tenant whose provider (<see cref="BrokenProvider"/>, set up as <see cref="ProviderTenant"/>'s) cannot be used: its
    /// stored key was made undecryptable, as after the encryption keys changed without the old ones.
    /// </summary>
    public string BrokenProviderTenant { get; } = NewUser("broken-provider");

    /// <summary>The name of both tenants' providers.</summary>
    public const string TenantProviderName = "tenant-openai";

    /// <summary>The id of <see cref="ProviderTenant"/>'s provider.</summary>
    public Guid TenantProvider { get; private set; }

    /// <summary>The id of <see cref="BrokenProviderTenant"/>'s provider.</summary>
    public Guid BrokenProvider { get; private set; }

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

    /// <summary>A tenant on the <c>llm</c> variant whose covered messages are deleted, all but the last 5.</summary>
    public string LlmDeleteTenant { get; } = NewUser("llm-delete");

    /// <summary>A tenant on the <c>llm-given-up</c> variant (the <c>llm</c> summarizer): its jobs' metrics are told apart by the variant.</summary>
    public string GivenUpTenant { get; } = NewUser("given-up");

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
        ["OutboundNetwork:AllowPrivateNetworks"] = "true", // the tenants' providers are the fake server on loopback
        ["Providers:CacheDuration"] = "00:00:01",
        ["Summaries:Variants:llm:Summarizer"] = "llm",
        ["Summaries:Variants:llm:MaxSummaryTokens"] = "60",
        ["Summaries:Variants:llm-chunks:Summarizer"] = "llm",
        ["Summaries:Variants:llm-chunks:ChunkSize"] = "4",
        ["Summaries:Variants:tokens:Milestones"] = "100000",
        ["Summaries:Variants:tokens:TokenThreshold"] = "60",
        ["Summaries:Variants:patient:MinInterval"] = "01:00:00",
        ["Summaries:Variants:llm-given-up:Summarizer"] = "llm",
        [$"Summaries:TenantVariants:{LlmTenant}"] = "llm",
        [$"Summaries:TenantVariants:{GivenUpTenant}"] = "llm-given-up",
        [$"Summaries:TenantVariants:{ChunkedLlmTenant}"] = "llm-chunks",
        [$"Summaries:TenantVariants:{TokensTenant}"] = "tokens",
        [$"Summaries:TenantVariants:{PatientTenant}"] = "patient",
        [$"Summaries:TenantVariants:{TokensArchiveTenant}"] = "tokens",
        [$"Summaries:TenantVariants:{LlmDeleteTenant}"] = "llm",
        [$"Retention:Tenants:{LlmDeleteTenant}:Policy"] = "delete-after-summary",
        [$"Retention:Tenants:{LlmDeleteTenant}:KeepLast"] = "5",
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
        TenantProvider = await AddProviderAsync(ProviderTenant);
        BrokenProvider = await AddProviderAsync(BrokenProviderTenant);
        await using var session = Host.Services.GetRequiredService<Marten.IDocumentStore>().LightweightSession(BrokenProviderTenant);
        var stored = (await session.LoadAsync<ModularChat.Providers.Domain.ProviderSettings>(BrokenProvider))!;
        var cipher = stored.EncryptedApiKey!.ToCharArray();
        cipher[^8] = cipher[^8] == 'A' ? 'B' : 'A';
        stored.EncryptedApiKey = new string(cipher);
        session.Store(stored);
        await session.SaveChangesAsync();
    }

    /// <summary>Gives <paramref name="tenant"/> a provider on <see cref="Llm"/> as its owner would, through the API.</summary>
    private async Task<Guid> AddProviderAsync(string tenant)
    {
        using var client = Client(tenant);
        var created = await (await client.PostJson("/api/providers", new
        {
            name = TenantProviderName, kind = "openai-compatible", endpoint = Llm.BaseUrl.ToString(), chatModel = "tenant-chat-model",
            summaryModel = "tenant-model", apiKey = "tenant-key", isDefault = true,
        })).ReadAs<System.Text.Json.JsonElement>(System.Net.HttpStatusCode.Created);
        return created.GetProperty("id").GetGuid();
    }

    protected override void ConfigureServices(IServiceCollection services)
    {
        services.AddSingleton<Microsoft.Extensions.Logging.ILoggerProvider>(Logs);
    }

    /// <summary>When the summary jobs about the conversation that wait in the inbox as scheduled are to run.</summary>
    public async Task<List<DateTimeOffset>> ScheduledJobsAbout(Guid id)
    {
        await using var connection = new Npgsql.NpgsqlConnection(PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new Npgsql.NpgsqlCommand(
            "select execution_time from modularchat.wolverine_incoming_envelopes where status = 'Scheduled' and message_type = @type and position(@id in body) > 0",
            connection);
        command.Parameters.AddWithValue("type", ModularChat.Summaries.Jobs.SummarizeConversation.Identity);
        command.Parameters.AddWithValue("id", System.Text.Encoding.UTF8.GetBytes(id.ToString()));
        var times = new List<DateTimeOffset>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            times.Add(await reader.GetFieldValueAsync<DateTimeOffset>(0));
        }

        return times;
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Llm.DisposeAsync();
    }
}

[CollectionDefinition(Name)]
public sealed class AppCollection : ICollectionFixture<SummariesApp>
{
    public const string Name = "summaries";
}
