using FluentValidation;
using JasperFx.Events.Projections;
using Marten;
using Marten.Schema;
using Marten.Schema.Indexing.Unique;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Options;
using ModularChat.BuildingBlocks.Security;
using ModularChat.Providers.Contracts;
using ModularChat.Summaries.Contracts;
using ModularChat.Summaries.Domain;
using ModularChat.Summaries.Features.Failures;
using ModularChat.Summaries.Features.GetSummary;
using ModularChat.Summaries.Features.ListSummaries;
using ModularChat.Summaries.Features.RequestSummary;
using ModularChat.Summaries.Features.Sweep;
using ModularChat.Summaries.Jobs;
using ModularChat.Summaries.Summarizers;
using Wolverine;

namespace ModularChat.Summaries;

/// <summary>The Summaries module's wiring: the Host calls only these.</summary>
public static class SummariesModule
{
    /// <summary>Services, options, validators and background services of the module.</summary>
    public static IServiceCollection AddSummariesModule(this IServiceCollection services)
    {
        services.AddValidatedOptions<SummariesOptions, SummariesOptionsValidator>(SummariesOptions.Section);
        services.AddValidatorsFromAssemblyContaining<SummariesOptionsValidator>(ServiceLifetime.Singleton, includeInternalTypes: true);

        // Without the Providers module no tenant has a provider: summaries use the configured summarizer.
        services.TryAddSingleton<ITenantAiClients, NoTenantAiClients>();
        services.AddAppendBursts();
        services.AddNodeStopping();
        services.AddSingleton<SummariesMetrics>();
        services.AddSingleton<SummarySettingsResolver>();
        services.AddSingleton<SummarizerSelector>();
        services.AddSingleton<SummaryScheduler>();
        services.AddSingleton<TenantJobShares>();
        services.AddSingleton<SummaryWriter>();
        services.AddSingleton<NoticeBatchFailures>();
        services.AddSingleton<IDeadLetterReport>(sp => sp.GetRequiredService<NoticeBatchFailures>());
        services.AddSingleton<IDeadLetterReport, CleanupDeadLetters.OnDeletion>();
        services.AddSingleton<IDeadLetterReport, CleanupDeadLetters.OnVerify>();
        services.AddSingleton<IDeadLetterReport, CleanupDeadLetters.OnPurge>();
        services.AddSingleton<SummaryFailures>();
        services.AddSingleton<SummarySweep>();
        services.AddSingleton<SummarySweepService>();
        services.AddHostedService(sp => sp.GetRequiredService<SummarySweepService>());
        services.AddHostedService<SummaryBacklogMonitor>();
        services.AddSingleton<IConversationSummaries, ConversationSummaries>();
        services.AddSingleton<IWolverineExtension, SummariesMessaging>();
        return services;
    }

    /// <summary>The summary streams' projections and the module's documents.</summary>
    public static StoreOptions ConfigureSummaries(this StoreOptions options)
    {
        options.Events.AddEventType<SummaryRevised>();
        options.Projections.Add<SummaryViewsProjection>(ProjectionLifecycle.Inline);
        options.Schema.For<SummaryView>();
        options.Schema.For<SummaryRevisionView>()
            .Duplicate(r => r.ConversationId, notNull: true)
            .Duplicate(r => r.Revision, notNull: true)
            .StartIndexesByTenantId()
            .UniqueIndex(UniqueIndexType.DuplicatedField, "ux_summary_revision", TenancyScope.PerTenant, r => r.ConversationId, r => r.Revision);
        options.Schema.For<ConversationActivity>()
            .UseOptimisticConcurrency(true)
            .Duplicate(a => a.PendingUpTo, notNull: true);
        options.Schema.For<SummaryProgress>()
            .Duplicate(p => p.CoveredTo, notNull: true);
        options.Schema.For<SummaryClaim>()
            .UseOptimisticConcurrency(true);
        options.Schema.For<SummarySweepRecord>();
        return options;
    }

    /// <summary>Lets Wolverine find the module's message handlers (the rest of its messaging depends on options: <see cref="SummariesMessaging"/>).</summary>
    public static WolverineOptions ConfigureSummaries(this WolverineOptions options)
    {
        options.Discovery.IncludeAssembly(typeof(SummariesModule).Assembly);
        return options;
    }

    /// <summary>The module's REST endpoints under <c>/api/conversations/{id}</c> and <c>/api/admin/summaries</c>.</summary>
    public static IEndpointRouteBuilder MapSummariesEndpoints(this IEndpointRouteBuilder app)
    {
        var conversations = app.MapGroup("/api/conversations")
            .WithTags("Summaries")
            .RequireAuthorization();
        conversations.MapGetSummary();
        conversations.MapListSummaries();
        conversations.MapRequestSummary();

        var admin = app.MapGroup("/api/admin/summaries")
            .WithTags("Summaries (admin)")
            .RequireAuthorization(Policies.Admin);
        admin.MapSummaryFailures();
        // A sweep reaches any tenant (or all): the service's operators' business, not a tenant's administrators'.
        app.MapGroup("/api/admin/summaries").WithTags("Summaries (admin)").RequireAuthorization(Policies.Operator).MapSweep();
        return app;
    }
}
