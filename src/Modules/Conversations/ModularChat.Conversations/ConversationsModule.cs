using FluentValidation;
using JasperFx.Events.Projections;
using Marten;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Options;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;
using ModularChat.Conversations.Features.AppendMessage;
using ModularChat.Conversations.Features.DeleteConversation;
using ModularChat.Conversations.Features.GetContext;
using ModularChat.Conversations.Features.Retention;
using ModularChat.Conversations.Features.GetConversation;
using ModularChat.Conversations.Features.ListConversations;
using ModularChat.Conversations.Features.ListMessages;
using ModularChat.Conversations.Features.UpdateConversation;
using ModularChat.Conversations.Features.StartConversation;
using Wolverine;

namespace ModularChat.Conversations;

/// <summary>The Conversations module's wiring: the Host calls only these.</summary>
public static class ConversationsModule
{
    /// <summary>Services, options and validators of the module.</summary>
    public static IServiceCollection AddConversationsModule(this IServiceCollection services)
    {
        services.AddValidatedOptions<ConversationsOptions, ConversationsOptionsValidator>(ConversationsOptions.Section);
        services.AddValidatorsFromAssemblyContaining<ConversationsOptionsValidator>(ServiceLifetime.Singleton, includeInternalTypes: true);
        services.AddSingleton<ConversationsMetrics>();
        services.AddAppendBursts();
        services.AddNodeStopping();
        services.AddHostedService<ClusterAppendRate>();
        services.AddSingleton<RetiredKeysBackfill>();
        services.AddHostedService(sp => sp.GetRequiredService<RetiredKeysBackfill>());
        services.AddSingleton<AppendGroups>();
        services.AddSingleton<IConversationMessages, ConversationMessages>();
        services.AddValidatedOptions<ContextOptions, ContextOptionsValidator>(ContextOptions.Section);
        services.AddSingleton<IConversationContexts, ConversationContexts>();
        services.AddValidatedOptions<RetentionOptions, RetentionOptionsValidator>(RetentionOptions.Section);
        services.AddSingleton<RetentionExecutor>();
        // The module's own entries and counts for its messages DatabaseOutages dead-letters.
        services.AddSingleton<IDeadLetterReport, RetentionDeadLetters>();
        services.AddSingleton<IDeadLetterReport, PurgeDeadLetters.OnDeletion>();
        services.AddSingleton<IDeadLetterReport, PurgeDeadLetters.OnRecheck>();
        return services;
    }

    /// <summary>Event streams, projections and indexes of the module.</summary>
    public static StoreOptions ConfigureConversations(this StoreOptions options)
    {
        options.Projections.Snapshot<Conversation>(SnapshotLifecycle.Inline);
        // StoredMessage is written by the projection's own set-based statement: its table must exist all the same.
        options.Schema.For<StoredMessage>();
        // Registered so that its table is created at start-up: otherwise Marten creates it on first use, inside a request.
        options.Schema.For<ArchivedMessage>();
        options.Schema.For<RetiredExternalId>();
        options.Schema.For<RetiredKeysBackfillMark>().SingleTenanted();
        options.Projections.Add(new StoredMessageProjection(options.DatabaseSchemaName), ProjectionLifecycle.Inline);

        // Conversation and StoredMessage configure their own columns and indexes (ConfigureMarten).
        options.Storage.ExtendedSchemaObjects.Add(MessagesByExternalId.Create(options.DatabaseSchemaName));
        return options;
    }

    /// <summary>Lets Wolverine find the module's message handlers.</summary>
    public static WolverineOptions ConfigureConversations(this WolverineOptions options)
    {
        options.Discovery.IncludeAssembly(typeof(ConversationsModule).Assembly);
        return options;
    }

    /// <summary>The module's REST endpoints under <c>/api/conversations</c>.</summary>
    public static IEndpointRouteBuilder MapConversationsEndpoints(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/api/conversations")
            .WithTags("Conversations")
            .RequireAuthorization();
        group.MapStartConversation();
        group.MapListConversations();
        group.MapGetConversation();
        group.MapUpdateConversation();
        group.MapDeleteConversation();
        group.MapAppendMessage();
        group.MapListMessages();
        group.MapGetContext();
        group.MapRetention(app);
        return app;
    }
}
