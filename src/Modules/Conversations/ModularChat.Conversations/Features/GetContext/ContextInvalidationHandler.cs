using ModularChat.BuildingBlocks.Caching;
using ModularChat.Summaries.Contracts;
using Wolverine;

namespace ModularChat.Conversations.Features.GetContext;

/// <summary>A new summary revision changes the conversation's summary and context: every node stops reading the cached ones.</summary>
public static class ContextInvalidationHandler
{
    public static async Task Handle(SummaryRevised revised, Envelope envelope, CacheGenerations generations)
    {
        if (envelope.TenantId is { Length: > 0 } tenant)
        {
            await generations.BumpAsync(ConversationContexts.SummaryScope(tenant, revised.ConversationId));
            await generations.BumpAsync(ConversationContexts.Scope(tenant, revised.ConversationId));
        }
    }
}
