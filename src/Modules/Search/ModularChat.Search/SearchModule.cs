using FluentValidation;
using Marten;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Options;
using ModularChat.Conversations.Contracts;
using ModularChat.Providers.Contracts;
using ModularChat.Search.Contracts;
using ModularChat.Search.Embeddings;
using ModularChat.Search.Features.Rebuild;
using ModularChat.Search.Features.Related;
using ModularChat.Search.Features.Search;
using ModularChat.Search.Features.Status;
using ModularChat.Search.Projection;
using ModularChat.Search.Searching;
using ModularChat.Search.Storage;
using ModularChat.Search.Vectors;
using Wolverine;

namespace ModularChat.Search;

/// <summary>The Search module's wiring: the Host calls only these.</summary>
public static class SearchModule
{
    /// <summary>Services, options, the embedding worker and the in-memory vector index of the module.</summary>
    public static IServiceCollection AddSearchModule(this IServiceCollection services)
    {
        services.AddValidatedOptions<SearchOptions, SearchOptionsValidator>(SearchOptions.Section);
        services.AddValidatorsFromAssemblyContaining<SearchOptionsValidator>(ServiceLifetime.Singleton, includeInternalTypes: true);
        // No Providers module in the process: every tenant uses the configured or built-in embedder.
        services.TryAddSingleton<ITenantAiClients, NoTenantAiClients>();
        services.AddSingleton<SearchDatabase>();
        services.AddAppendBursts();
        services.AddNodeStopping();
        services.AddStartCheck<LanguageCheck>();
        services.AddHostedService<TombstoneCleanup>();
        services.AddSingleton(sp => new HashedEmbedder(sp.GetRequiredService<IOptions<SearchOptions>>().Value.Embeddings.BuiltInDimensions));
        services.AddSingleton<TenantEmbedders>();
        services.AddSingleton<IVectorIndex, InMemoryVectorIndex>();
        services.AddSingleton<SearchMetrics>();
        // The module's own entries and counts for the clean-ups DatabaseOutages dead-letters.
        services.AddSingleton<IDeadLetterReport, SearchCleanupDeadLetters.OnDeletion>();
        services.AddSingleton<IDeadLetterReport, SearchCleanupDeadLetters.OnRetention>();
        services.AddSingleton<EmbeddingWorker>();
        services.AddHostedService(sp => sp.GetRequiredService<EmbeddingWorker>());
        services.AddSingleton<KeywordSearch>();
        services.AddSingleton<HybridSearch>();
        services.AddSingleton<ConversationMetadataScope>();
        services.AddSingleton<HitDetails>();
        services.AddSingleton<SearchRebuilds>();
        services.AddSingleton<IConversationSearch, ConversationSearch>();
        return services;
    }

    /// <summary>The search tables and the asynchronous projection that fills them from conversation and summary events.</summary>
    /// <param name="services">Resolves the module's options (language, speaker keys) when the store is built.</param>
    public static StoreOptions ConfigureSearch(this StoreOptions options, IServiceProvider services)
    {
        var search = services.GetRequiredService<IOptions<SearchOptions>>().Value;
        var schema = new SearchSchema(options.DatabaseSchemaName);
        foreach (var table in schema.Objects())
        {
            options.Storage.ExtendedSchemaObjects.Add(table);
        }

        options.Storage.Add(new EventsByTenantIndexFeature(options.Events.DatabaseSchemaName, options.Advanced.Migrator));
        options.Events.IgnoreIndex(EventsByTenantIndex.Name);

        options.Projections.Add(new SearchEntriesProjection(schema, search.Language, search.SpeakerKeys, services.GetRequiredService<IConversationMessages>,
            services.GetRequiredService<AppendBursts>()), JasperFx.Events.Projections.ProjectionLifecycle.Async);
        return options;
    }

    /// <summary>Lets Wolverine find the module's message handlers.</summary>
    public static WolverineOptions ConfigureSearch(this WolverineOptions options)
    {
        options.Discovery.IncludeAssembly(typeof(SearchModule).Assembly);
        return options;
    }

    /// <summary>The module's REST endpoints: search, status, related conversations, and the admin rebuild.</summary>
    public static IEndpointRouteBuilder MapSearchEndpoints(this IEndpointRouteBuilder app)
    {
        var search = app.MapGroup("/api/search").WithTags("Search").RequireAuthorization();
        search.MapSearch();
        search.MapSearchStatus();
        app.MapGroup("/api/conversations").WithTags("Search").RequireAuthorization().MapRelatedConversations();
        app.MapRebuildSearch();
        return app;
    }
}
