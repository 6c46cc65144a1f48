using FluentValidation;
using JasperFx;
using Marten;
using Marten.Schema;
using Marten.Schema.Indexing.Unique;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Options;
using ModularChat.BuildingBlocks.Security;
using ModularChat.Providers.Clients;
using ModularChat.Providers.Contracts;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Features.Chat;
using ModularChat.Providers.Features.McpServers;
using ModularChat.Providers.Features.Providers;
using ModularChat.Providers.Features.Secrets;
using ModularChat.Providers.Mcp;
using ModularChat.Providers.Network;
using ModularChat.Providers.Secrets;
using Wolverine;

// The rotate-keys command lives in this module; JasperFx looks for commands in assemblies that say so.
[assembly: JasperFxAssembly]

namespace ModularChat.Providers;

/// <summary>The Providers module's wiring: the Host calls only these.</summary>
public static class ProvidersModule
{
    /// <summary>Services, options and validators of the module, and Data Protection for stored secrets.</summary>
    public static IServiceCollection AddProvidersModule(this IServiceCollection services)
    {
        services.AddValidatedOptions<ProvidersOptions, ProvidersOptionsValidator>(ProvidersOptions.Section);
        services.AddValidatedOptions<OutboundNetworkOptions, OutboundNetworkOptionsValidator>(OutboundNetworkOptions.Section);
        services.AddValidatedOptions<ChatTurnOptions, ChatTurnOptionsValidator>(ChatTurnOptions.Section);
        services.AddValidatedOptions<McpOptions, McpOptionsValidator>(McpOptions.Section);
        services.AddValidatorsFromAssemblyContaining<ProvidersOptionsValidator>(ServiceLifetime.Singleton, includeInternalTypes: true);
        services.AddSecretProtection();

        services.AddSingleton<ProvidersMetrics>();
        services.AddSingleton<OutboundNetwork>();
        services.AddSingleton<ProviderDirectory>();
        services.AddSingleton<ModelClients>();
        services.AddSingleton<McpStdioProcesses>();
        services.AddSingleton<McpConnector>();
        services.AddSingleton<SecretRotation>();
        // Other modules fall back to NoTenantAiClients (TryAdd) when this module is absent; this registration wins.
        services.AddSingleton<ITenantAiClients, TenantAiClients>();
        services.AddScoped<ChatContextAssembler>();
        services.AddScoped<ChatTurns>();
        services.AddSingleton<ChatShutdown>();
        // The host drops the requests still running at its shutdown timeout (30 s unless configured): a turn given a longer
        // grace would have had no answer at all, not the 503 the grace is there for.
        services.AddOptions<HostOptions>().Configure<IOptions<ChatTurnOptions>>((host, chat) =>
            host.ShutdownTimeout = TimeSpan.FromTicks(Math.Max(host.ShutdownTimeout.Ticks, (chat.Value.ShutdownGrace + ChatShutdown.AnswerTime).Ticks)));
        return services;
    }

    /// <summary>Documents and indexes of the module.</summary>
    public static StoreOptions ConfigureProviders(this StoreOptions options)
    {
        // Names are unique per tenant; the database itself refuses a duplicate.
        // Versioned: a write of a copy read before another write fails (ConcurrencyException) instead of undoing it.
        options.Schema.For<ProviderSettings>()
            .UseOptimisticConcurrency(true)
            .Duplicate(p => p.NormalizedName, notNull: true)
            .UniqueIndex(UniqueIndexType.DuplicatedField, "ux_provider_settings_name", TenancyScope.PerTenant, p => p.NormalizedName);
        options.Schema.For<McpServerConnection>()
            .UseOptimisticConcurrency(true)
            .Duplicate(s => s.NormalizedName, notNull: true)
            .UniqueIndex(UniqueIndexType.DuplicatedField, "ux_mcp_server_name", TenancyScope.PerTenant, s => s.NormalizedName);
        // The key ring is the deployment's, not a tenant's.
        options.Schema.For<DataProtectionKeyDocument>().SingleTenanted();
        return options;
    }

    /// <summary>Lets Wolverine find the module's message handlers (none yet).</summary>
    public static WolverineOptions ConfigureProviders(this WolverineOptions options)
    {
        options.Discovery.IncludeAssembly(typeof(ProvidersModule).Assembly);
        return options;
    }

    /// <summary>The module's REST endpoints: <c>/api/providers</c>, <c>/api/mcp-servers</c>, the chat endpoint and key rotation.</summary>
    public static IEndpointRouteBuilder MapProvidersEndpoints(this IEndpointRouteBuilder app)
    {
        // Reading is any caller's of the tenant; adding, changing, deleting and testing (which calls out with the stored
        // secrets) may need a role (Auth:SettingsRole).
        var providers = app.MapGroup("/api/providers").WithTags("Providers").RequireAuthorization();
        providers.MapReadProviders();
        var providerChanges = providers.MapGroup("").RequireAuthorization(Policies.TenantSettings);
        providerChanges.MapCreateProvider();
        providerChanges.MapUpdateProvider();
        providerChanges.MapDeleteProvider();
        providerChanges.MapTestProvider();

        var mcp = app.MapGroup("/api/mcp-servers").WithTags("MCP servers").RequireAuthorization();
        mcp.MapReadMcpServers();
        var mcpChanges = mcp.MapGroup("").RequireAuthorization(Policies.TenantSettings);
        mcpChanges.MapCreateMcpServer();
        mcpChanges.MapUpdateMcpServer();
        mcpChanges.MapDeleteMcpServer();
        mcpChanges.MapTestMcpServer();

        app.MapGroup("/api/conversations").WithTags("Chat").RequireAuthorization().MapChat();
        app.MapRotateSecrets();
        return app;
    }
}
