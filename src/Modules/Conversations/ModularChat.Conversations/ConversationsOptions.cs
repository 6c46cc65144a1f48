using FluentValidation;

namespace ModularChat.Conversations;

/// <summary>Limits and paging of the Conversations API (section <c>Conversations</c>).</summary>
public sealed class ConversationsOptions
{
    public const string Section = "Conversations";

    /// <summary>Longest message content, in characters (422 beyond).</summary>
    public int MaxContentLength { get; set; } = 100_000;

    /// <summary>Most messages in one batch append (422 beyond).</summary>
    public int MaxBatchSize { get; set; } = 1000;

    /// <summary>
    /// Most messages one shared append transaction carries (group commit: appends of a tenant that arrive while its
    /// previous transaction is written are written together). A request with at least this many messages is written on its own.
    /// </summary>
    public int AppendGroupMaxMessages { get; set; } = 256;

    /// <summary>
    /// Append transactions one node writes at once for one tenant (0: no grouping, every request its own transaction).
    /// One gives the largest groups and the least work per append (ADR 0005 has the measurements); more lets a tenant's
    /// appends pass a group that waits for a conversation's lock.
    /// </summary>
    public int AppendGroupConcurrency { get; set; } = 1;

    /// <summary>
    /// Longest a tenant's writer waits, after a transaction of several appends, for as many appends as were in flight
    /// (or a full group of messages) to queue again before it writes the next group (zero: never waits). A lone client never waits.
    /// </summary>
    public TimeSpan AppendGroupWait { get; set; } = TimeSpan.FromMilliseconds(2);

    /// <summary>
    /// Longest a deleted conversation's event stream waits for the asynchronous projections' high-water mark to pass
    /// its last event before it is removed anyway (removed before, its events make Marten's daemon pause on the gap).
    /// </summary>
    public TimeSpan PurgeMaxWait { get; set; } = TimeSpan.FromMinutes(5);

    public int MaxTitleLength { get; set; } = 200;

    public int MaxExternalIdLength { get; set; } = 200;

    public int MaxMetadataEntries { get; set; } = 32;

    public int MaxMetadataKeyLength { get; set; } = 64;

    public int MaxMetadataValueLength { get; set; } = 2048;

    public int DefaultPageSize { get; set; } = 50;

    public int MaxPageSize { get; set; } = 500;
}

internal sealed class ConversationsOptionsValidator : AbstractValidator<ConversationsOptions>
{
    public ConversationsOptionsValidator()
    {
        RuleFor(o => o.MaxContentLength).InclusiveBetween(1, 10_000_000);
        RuleFor(o => o.MaxBatchSize).InclusiveBetween(1, 100_000);
        RuleFor(o => o.AppendGroupMaxMessages).InclusiveBetween(1, 100_000);
        RuleFor(o => o.AppendGroupConcurrency).InclusiveBetween(0, 64);
        RuleFor(o => o.AppendGroupWait).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromSeconds(1));
        RuleFor(o => o.PurgeMaxWait).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromDays(1));
        RuleFor(o => o.MaxTitleLength).InclusiveBetween(1, 10_000);
        // The unique index on (tenant, conversation, external id) holds rows of at most 2,704 bytes: a tenant id of 256
        // characters and an external id of 400, all of four UTF-8 bytes and not compressible, still fit (1,000 did not:
        // such an append failed in PostgreSQL, a 500).
        RuleFor(o => o.MaxExternalIdLength).InclusiveBetween(1, 400);
        RuleFor(o => o.MaxMetadataEntries).InclusiveBetween(0, 1000);
        RuleFor(o => o.MaxMetadataKeyLength).InclusiveBetween(1, 1000);
        RuleFor(o => o.MaxMetadataValueLength).InclusiveBetween(1, 1_000_000);
        RuleFor(o => o.MaxPageSize).InclusiveBetween(1, 10_000);
        RuleFor(o => o.DefaultPageSize).GreaterThan(0).LessThanOrEqualTo(o => o.MaxPageSize)
            .WithMessage("must be between 1 and MaxPageSize.");
    }
}
