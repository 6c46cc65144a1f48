using Marten.Schema;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Domain;

/// <summary>
/// The idempotency key of a message that retention took out of the hot <see cref="StoredMessage"/>s (archived or
/// deleted): its external id and what an append retried with that id answers (the original's id, sequence, token count
/// and time), no content. Without it a client retrying an append, or re-sending an import, after retention would store
/// the message a second time. Written by retention with the compaction; removed with the conversation.
/// </summary>
/// <remarks>
/// Its properties are named as <see cref="StoredMessage"/>'s, so <see cref="MessagesByExternalId"/> returns its JSON in
/// place of a stored message's (the fields a duplicate's answer needs; the content stays empty).
/// </remarks>
public sealed record RetiredExternalId
{
    /// <summary>The message id (document id).</summary>
    public Guid Id { get; init; }

    public Guid ConversationId { get; init; }

    public long Sequence { get; init; }

    public string ExternalId { get; init; } = "";

    public int TokenCount { get; init; }

    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>Marten's storage hook: one unique index, by tenant, conversation and external id (the lookup's).</summary>
    public static void ConfigureMarten(DocumentMapping mapping)
    {
        mapping.DuplicateField(nameof(ConversationId), notNull: true);
        mapping.DuplicateField(nameof(ExternalId), notNull: true);
        var byExternalId = mapping.AddIndex("tenant_id", "conversation_id", "external_id");
        byExternalId.IsUnique = true;
        byExternalId.Name = "ux_retired_external_id";
    }

    /// <summary>The key of <paramref name="e"/>, when it has an external id.</summary>
    public static RetiredExternalId? From(MessageAppended e) => e.ExternalId is null ? null : new()
    {
        Id = e.MessageId,
        ConversationId = e.ConversationId,
        Sequence = e.Sequence,
        ExternalId = e.ExternalId,
        TokenCount = e.TokenCount,
        CreatedAt = e.CreatedAt,
    };
}
