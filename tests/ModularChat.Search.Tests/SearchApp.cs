using System.Text.Json;
using System.Net;
using System.Collections.Concurrent;
using Alba;
using JasperFx.Events;
using Marten;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Testing.Fakes;
using ModularChat.BuildingBlocks.Background;
using ModularChat.Conversations.Contracts;
using ModularChat.Search.Projection;
using ModularChat.Search.Storage;
using Npgsql;
using Wolverine;

namespace ModularChat.Search.Tests;

/// <summary>
/// The shared host of this assembly: short polling intervals so background indexing is quick to observe, and an
/// OpenAI-compatible embeddings server on loopback standing in for tenants' LLM providers.
/// </summary>
public sealed class SearchApp : ModularChatApp
{
    public FakeOpenAiServer OpenAi { get; private set; } = null!;

    /// <summary>Which tenants have an embedding provider (through the real Providers module).</summary>
    public TenantProviders Providers { get; }

    public SearchApp() => Providers = new TenantProviders(this);

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["OutboundNetwork:AllowPrivateNetworks"] = "true", // the fake OpenAI server is on loopback
        ["Providers:CacheDuration"] = "00:00:01",
        ["Search:Embeddings:PollInterval"] = "00:00:00.100",
        ["Search:Embeddings:ModelCheckInterval"] = "00:00:01",
        ["Search:Embeddings:RetryDelay"] = "00:00:01",
        ["Search:Embeddings:MaxRefusedAttempts"] = "3",
        ["Search:VectorIndex:RefreshInterval"] = "00:00:00",
        ["Search:MaxQueryLength"] = "200",
        ["Search:MaxResults"] = "50",
    };

    public override async Task InitializeAsync()
    {
        OpenAi = await FakeOpenAiServer.StartAsync();
        await base.InitializeAsync();
    }

    private bool _searchOnlyNode;

    /// <summary>What the hosts log, every level.</summary>
    public CapturedLogs Logs { get; } = new();

    protected override void ConfigureServices(IServiceCollection services)
    {
        services.AddSingleton<Microsoft.Extensions.Logging.ILoggerProvider>(Logs);
        if (_searchOnlyNode)
        {
            // No agents (projections), no listeners: a node that only answers requests, next to the main one.
            services.ConfigureWolverine(o => o.Durability.Mode = DurabilityMode.MediatorOnly);
        }
    }

    /// <summary>
    /// Another node on the same database and Redis that answers searches but runs no background work, with
    /// <paramref name="settings"/> on top of this host's.
    /// </summary>
    public async Task<IAlbaHost> StartSearchOnlyNodeAsync(IDictionary<string, string?>? settings = null)
    {
        _searchOnlyNode = true;
        try
        {
            var overrides = new Dictionary<string, string?>(settings ?? new Dictionary<string, string?>()) { ["Search:Embeddings:WorkerEnabled"] = "false" };
            return await StartHostAsync(overrides);
        }
        finally
        {
            _searchOnlyNode = false;
        }
    }

    /// <summary>A connection to the test database, to check what is stored.</summary>
    public async Task<NpgsqlConnection> OpenConnectionAsync()
    {
        var connection = new NpgsqlConnection(PostgresConnectionString);
        await connection.OpenAsync();
        return connection;
    }

    public IDocumentStore Store => Host.Services.GetRequiredService<IDocumentStore>();

    /// <summary>
    /// The search projection as the host configures it (English, default speaker keys), reading archived messages from
    /// <paramref name="archive"/>, for tests that apply pages by hand (<see cref="ApplyPageAsync"/>).
    /// </summary>
    internal SearchEntriesProjection Projection(Func<IConversationMessages> archive)
        => new(new SearchSchema("modularchat"), "english", [], archive, Host.Services.GetRequiredService<AppendBursts>());

    /// <summary>A user's message appended to a conversation, as an event for <see cref="ApplyPageAsync"/>.</summary>
    internal static IEvent Appended(Guid conversationId, string content, long sequence = 1)
        => new Event<MessageAppended>(new MessageAppended(conversationId, Guid.NewGuid(), sequence, MessageRole.User, content, null, null,
            DateTimeOffset.UtcNow, DateTimeOffset.UtcNow, 2));

    /// <summary>A conversation deleted, as an event for <see cref="ApplyPageAsync"/>.</summary>
    internal static IEvent Deleted(Guid conversationId) => new Event<ConversationDeleted>(new ConversationDeleted(conversationId, DateTimeOffset.UtcNow));

    /// <summary>Applies <paramref name="events"/> as one page of the projection for <paramref name="tenant"/>, in one transaction, as the daemon would.</summary>
    internal async Task ApplyPageAsync(string tenant, SearchEntriesProjection projection, IReadOnlyList<IEvent> events)
    {
        await using var session = Store.LightweightSession(tenant);
        await projection.ApplyAsync(session, events, CancellationToken.None);
        await session.SaveChangesAsync();
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await OpenAi.DisposeAsync();
    }
}

/// <summary>
/// Tenants' embedding providers, set up the way a user does it: through the Providers module's REST API, pointing at the
/// fake OpenAI-compatible server on loopback.
/// </summary>
public sealed class TenantProviders(SearchApp app)
{
    private readonly ConcurrentDictionary<string, Guid> _ids = new(StringComparer.Ordinal);

    /// <summary>From now on <paramref name="tenantId"/> embeds with <paramref name="model"/> on the fake server (null: no provider).</summary>
    public async Task UseAsync(string tenantId, string? model)
    {
        using var client = app.Client(tenantId);
        if (model is null)
        {
            if (_ids.TryRemove(tenantId, out var removed))
            {
                Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/providers/{removed}")).StatusCode);
            }

            return;
        }

        var settings = new
        {
            name = "fake-openai", kind = "openai-compatible", endpoint = app.OpenAi.BaseUrl.ToString(), chatModel = "fake-chat",
            embeddingModel = model, apiKey = "test-key", isDefault = true,
        };
        if (_ids.TryGetValue(tenantId, out var id))
        {
            await (await client.PutJson($"/api/providers/{id}", settings)).ReadAs<JsonElement>(HttpStatusCode.OK);
        }
        else
        {
            var created = await (await client.PostJson("/api/providers", settings)).ReadAs<JsonElement>(HttpStatusCode.Created);
            _ids[tenantId] = created.GetProperty("id").GetGuid();
        }
    }
}

[CollectionDefinition(Name)]
public sealed class AppCollection : ICollectionFixture<SearchApp>
{
    public const string Name = "search";
}

/// <summary>
/// The fixture of the tests that run the Host only as processes (<see cref="ProjectionOutageTests"/>,
/// <see cref="RollingDeployTests"/>): their collection runs beside <see cref="AppCollection"/> instead of inside it.
/// </summary>
public sealed class SearchProcessesApp() : ProcessesApp(TestDatabase("search_processes"));

[CollectionDefinition(Name)]
public sealed class ProcessesCollection : ICollectionFixture<SearchProcessesApp>
{
    public const string Name = "search-processes";
}
