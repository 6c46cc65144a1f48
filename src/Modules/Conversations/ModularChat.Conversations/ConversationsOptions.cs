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
        RuleFor(o => o.MaxTitleLength).InclusiveBetween(1, 10_000);
        RuleFor(o => o.MaxExternalIdLength).InclusiveBetween(1, 1000);
        RuleFor(o => o.MaxMetadataEntries).InclusiveBetween(0, 1000);
        RuleFor(o => o.MaxMetadataKeyLength).InclusiveBetween(1, 1000);
        RuleFor(o => o.MaxMetadataValueLength).InclusiveBetween(1, 1_000_000);
        RuleFor(o => o.MaxPageSize).InclusiveBetween(1, 10_000);
        RuleFor(o => o.DefaultPageSize).GreaterThan(0).LessThanOrEqualTo(o => o.MaxPageSize)
            .WithMessage("must be between 1 and MaxPageSize.");
    }
}
