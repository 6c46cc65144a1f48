using ModularChat.BuildingBlocks.Caching;
using ModularChat.Summaries.Contracts;
using Wolverine;

namespace ModularChat.Conversations.Features.GetContext;

/// <summary>A new summary revision changes the conversation's context: every node stops reading the cached one.</summary>
public static class ContextInvalidationHandler
{
    public static Task Handle(SummaryRevised revised, Envelope envelope, CacheGenerations generations)
        => envelope.TenantId is { Length: > 0 } tenant
            ? generations.BumpAsync(ConversationContexts.Scope(tenant, revised.ConversationId))
            : Task.CompletedTask;
}
