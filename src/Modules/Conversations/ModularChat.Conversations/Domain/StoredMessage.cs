using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Domain;

/// <summary>One message as readers page through it: a document per <see cref="MessageAppended"/>.</summary>
public sealed record StoredMessage
{
    /// <summary>The message id (document id).</summary>
    public Guid Id { get; init; }

    public Guid ConversationId { get; init; }

    public long Sequence { get; init; }

    public MessageRole Role { get; init; }

    public string Content { get; init; } = "";

    public string? ExternalId { get; init; }

    public IReadOnlyDictionary<string, string>? Metadata { get; init; }

    public DateTimeOffset CreatedAt { get; init; }

    public DateTimeOffset AppendedAt { get; init; }

    public int TokenCount { get; init; }

    public static StoredMessage From(MessageAppended e) => new()
    {
        Id = e.MessageId,
        ConversationId = e.ConversationId,
        Sequence = e.Sequence,
        Role = e.Role,
        Content = e.Content,
        ExternalId = e.ExternalId,
        Metadata = e.Metadata,
        CreatedAt = e.CreatedAt,
        AppendedAt = e.AppendedAt,
        TokenCount = e.TokenCount,
    };
}
