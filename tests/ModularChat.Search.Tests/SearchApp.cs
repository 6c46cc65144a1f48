using System.ClientModel;
using System.Collections.Concurrent;
using Alba;
using Marten;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Providers.Contracts;
using ModularChat.Testing.Fakes;
using Npgsql;
using OpenAI;
using OpenAI.Embeddings;
using Wolverine;

namespace ModularChat.Search.Tests;

/// <summary>
/// The shared host of this assembly: short polling intervals so background indexing is quick to observe, and an
/// OpenAI-compatible embeddings server on loopback standing in for tenants' LLM providers.
/// </summary>
public sealed class SearchApp : ModularChatApp
{
    public FakeOpenAiServer OpenAi { get; private set; } = null!;

    /// <summary>Which tenants have an embedding provider (the stand-in for the Providers module, not merged here yet).</summary>
    public TestTenantAiClients Providers { get; } = new();

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["Search:Embeddings:PollInterval"] = "00:00:00.100",
        ["Search:Embeddings:ModelCheckInterval"] = "00:00:01",
        ["Search:Embeddings:RetryDelay"] = "00:00:01",
        ["Search:VectorIndex:RefreshInterval"] = "00:00:00",
        ["Search:MaxQueryLength"] = "200",
        ["Search:MaxResults"] = "50",
    };

    public override async Task InitializeAsync()
    {
        OpenAi = await FakeOpenAiServer.StartAsync();
        Providers.BaseUrl = OpenAi.BaseUrl;
        await base.InitializeAsync();
    }

    private bool _searchOnlyNode;

    protected override void ConfigureServices(IServiceCollection services)
    {
        services.AddSingleton<ITenantAiClients>(Providers);
        if (_searchOnlyNode)
        {
            // No agents (projections), no listeners: a node that only answers requests, next to the main one.
            services.ConfigureWolverine(o => o.Durability.Mode = DurabilityMode.MediatorOnly);
        }
    }

    /// <summary>Another node on the same database and Redis that answers searches but runs no background work.</summary>
    public async Task<IAlbaHost> StartSearchOnlyNodeAsync()
    {
        _searchOnlyNode = true;
        try
        {
            return await StartHostAsync(new Dictionary<string, string?> { ["Search:Embeddings:WorkerEnabled"] = "false" });
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

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await OpenAi.DisposeAsync();
    }
}

/// <summary>Tenants' embedding providers as the Providers module would hand them out: an OpenAI client on the fake server.</summary>
public sealed class TestTenantAiClients : ITenantAiClients
{
    private readonly ConcurrentDictionary<string, string> _models = new(StringComparer.Ordinal);

    public Uri BaseUrl { get; set; } = null!;

    /// <summary>From now on <paramref name="tenantId"/> embeds with <paramref name="model"/> on the fake server (null: no provider).</summary>
    public void Use(string tenantId, string? model)
    {
        if (model is null)
        {
            _models.TryRemove(tenantId, out _);
        }
        else
        {
            _models[tenantId] = model;
        }
    }

    public Task<TenantChatClient?> GetChatClientAsync(string tenantId, AiPurpose purpose, string? providerName = null, CancellationToken cancellationToken = default)
        => Task.FromResult<TenantChatClient?>(null);

    public Task<TenantEmbeddingGenerator?> GetEmbeddingGeneratorAsync(string tenantId, CancellationToken cancellationToken = default)
    {
        if (!_models.TryGetValue(tenantId, out var model))
        {
            return Task.FromResult<TenantEmbeddingGenerator?>(null);
        }

        var generator = new EmbeddingClient(model, new ApiKeyCredential("test-key"), new OpenAIClientOptions { Endpoint = BaseUrl }).AsIEmbeddingGenerator();
        return Task.FromResult<TenantEmbeddingGenerator?>(new TenantEmbeddingGenerator(generator, "fake-openai", model));
    }
}

[CollectionDefinition(Name)]
public sealed class AppCollection : ICollectionFixture<SearchApp>
{
    public const string Name = "search";
}
