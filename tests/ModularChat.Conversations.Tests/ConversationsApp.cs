using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Contracts;
using ModularChat.Testing;
using Wolverine;

namespace ModularChat.Conversations.Tests;

/// <summary>The shared host of this assembly, with a probe that records the integration events Wolverine delivers.</summary>
public sealed class ConversationsApp : ModularChatApp
{
    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        // Small limits so the limit tests need small payloads.
        ["Conversations:MaxContentLength"] = "2000",
        ["Conversations:MaxBatchSize"] = "50",
        ["Limits:MaxRequestBodyBytes"] = "200000",
    };

    protected override void ConfigureServices(IServiceCollection services)
        => services.ConfigureWolverine(o => o.Discovery.IncludeAssembly(typeof(ConversationsApp).Assembly));
}

[CollectionDefinition(Name)]
public sealed class AppCollection : ICollectionFixture<ConversationsApp>
{
    public const string Name = "conversations";
}

/// <summary>A downstream subscriber, as another module would be: it only sees Contracts events and the envelope's tenant.</summary>
public static class IntegrationEventProbe
{
    public static readonly ConcurrentQueue<(string? Tenant, IConversationEvent Event)> Received = new();
}

public sealed class IntegrationEventProbeHandler
{
    public static void Handle(MessageAppended e, Envelope envelope) => IntegrationEventProbe.Received.Enqueue((envelope.TenantId, e));

    public static void Handle(ConversationStarted e, Envelope envelope) => IntegrationEventProbe.Received.Enqueue((envelope.TenantId, e));

    public static void Handle(ConversationDeleted e, Envelope envelope) => IntegrationEventProbe.Received.Enqueue((envelope.TenantId, e));
}
