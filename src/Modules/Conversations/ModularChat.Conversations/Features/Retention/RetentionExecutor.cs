using JasperFx.Events;
using JasperFx.Events.Protected;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Caching;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;
using ModularChat.Conversations.Features.GetContext;
using ModularChat.Summaries.Contracts;

namespace ModularChat.Conversations.Features.Retention;

/// <summary>
/// Applies a tenant's retention policy to one conversation, with Marten's own means: the covered messages'
/// events are compacted away (a <c>Compacted&lt;Conversation&gt;</c> snapshot replaces them in the stream),
/// their hot documents are hard-deleted, archived ones are copied to <see cref="ArchivedMessage"/> by the
/// compaction's archiver first, and a <see cref="RetentionApplied"/> event records the range. All in one
/// transaction holding the stream's lock, so appends wait and nothing is half done.
/// </summary>
public sealed partial class RetentionExecutor(
    IServiceProvider services,
    CacheGenerations generations,
    IOptionsMonitor<RetentionOptions> options,
    TimeProvider clock,
    ConversationsMetrics metrics,
    ILogger<RetentionExecutor> logger)
{
    public async Task<RetentionApplied?> ApplyAsync(IDocumentSession session, Guid conversationId, CancellationToken cancellationToken)
    {
        var tenant = session.TenantId;
        var policy = options.CurrentValue.For(tenant);
        if (policy.Action is null)
        {
            return null;
        }

        // Only a stored revision counts: read it from the Summaries module, not from the event that triggered us.
        var summaries = services.GetService<IConversationSummaries>();
        var summary = summaries is null ? null : await summaries.GetCurrentAsync(tenant, conversationId, cancellationToken);
        if (summary is null)
        {
            return null;
        }

        var stream = await session.Events.FetchForExclusiveWriting<Conversation>(conversationId, cancellationToken);
        if (stream.Aggregate is not { } conversation)
        {
            return null;
        }

        var step = RetentionRule.Next(conversation.MessageCount, conversation.RetainedThrough, summary.ToSequence, policy);
        if (step is null)
        {
            return null;
        }

        var events = await session.Events.FetchStreamAsync(conversationId, token: cancellationToken);
        var messages = events.Where(e => e.Data is MessageAppended m && m.Sequence >= step.FromSequence && m.Sequence <= step.ToSequence).ToList();
        if (messages.Count == 0)
        {
            return null;
        }

        var now = clock.GetUtcNow();
        await session.Events.CompactStreamAsync<Conversation>(conversationId, request =>
        {
            request.Version = messages[^1].Version;
            request.CancellationToken = cancellationToken;
            if (step.Action == RetentionAction.Archived)
            {
                request.Archiver = new MessageArchiver(now);
            }
        });
        session.HardDeleteWhere<StoredMessage>(m => m.ConversationId == conversationId && m.Sequence <= step.ToSequence);
        var applied = new RetentionApplied(
            conversationId,
            step.Action,
            step.FromSequence,
            step.ToSequence,
            messages.Count,
            messages.Sum(e => Conversation.ContentBytes(((MessageAppended)e.Data).Content)),
            policy.Name,
            summary.ToSequence,
            now);
        stream.AppendOne(applied);
        await session.SaveChangesAsync(cancellationToken);

        await generations.BumpAsync(ConversationContexts.Scope(tenant, conversationId));
        metrics.RetentionApplied(applied);
        LogApplied(logger, conversationId, applied.Action, applied.FromSequence, applied.ToSequence, applied.Bytes, policy.Name);
        return applied;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Retention {Action} messages {From}-{To} ({Bytes} bytes) of conversation {ConversationId} under {Policy}")]
    private static partial void LogApplied(ILogger logger, Guid conversationId, RetentionAction action, long from, long to, long bytes, string policy);

    /// <summary>Copies the messages of the events about to be compacted away into the archive.</summary>
    private sealed class MessageArchiver(DateTimeOffset archivedAt) : IEventsArchiver<IDocumentOperations>
    {
        public Task MaybeArchiveAsync<T>(IDocumentOperations operations, StreamCompactingRequest<T> request, IReadOnlyList<IEvent> events, CancellationToken cancellation)
            where T : class
        {
            var archived = events.Select(e => e.Data).OfType<MessageAppended>().Select(m => ArchivedMessage.From(m, archivedAt)).ToArray();
            if (archived.Length > 0)
            {
                operations.Store(archived);
            }

            return Task.CompletedTask;
        }
    }
}
