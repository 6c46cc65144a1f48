using FluentValidation;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations.Features;

/// <summary>A message as a client submits it, alone or in a batch.</summary>
/// <param name="Role">user, assistant, system or tool.</param>
/// <param name="Content">The text (not empty).</param>
/// <param name="ExternalId">The client's id: a retry with the same value stores nothing new.</param>
/// <param name="Metadata">Free key/value metadata.</param>
/// <param name="CreatedAt">When the client says it was written; defaults to the time it is stored.</param>
public sealed record NewMessage(
    string? Role,
    string? Content,
    string? ExternalId = null,
    Dictionary<string, string>? Metadata = null,
    DateTimeOffset? CreatedAt = null);

/// <summary>Validation rules shared by the Conversations commands.</summary>
internal static class ConversationRules
{
    public static void Metadata<T>(IRuleBuilder<T, Dictionary<string, string>?> rule, ConversationsOptions options)
    {
        rule.Must(m => m is null || m.Count <= options.MaxMetadataEntries)
            .WithMessage($"'metadata' may have at most {options.MaxMetadataEntries} entries.").AsLimit();
        rule.Must(m => m is null || m.Values.All(v => v is not null))
            .WithMessage("'metadata' values must be strings, not null.");
        Entries(rule, m => m?.Keys, m => m?.Values, options);
    }

    /// <summary>
    /// The rules for a merge patch of metadata (a <c>null</c> value removes its key). The entry count can only be checked
    /// against the stored metadata, by the handler.
    /// </summary>
    public static void MetadataPatch<T>(IRuleBuilder<T, Dictionary<string, string?>?> rule, ConversationsOptions options)
        => Entries(rule, m => m?.Keys, m => m?.Values, options);

    private static void Entries<T, TMetadata>(
        IRuleBuilder<T, TMetadata> rule, Func<TMetadata, IEnumerable<string>?> keys, Func<TMetadata, IEnumerable<string?>?> values, ConversationsOptions options)
    {
        rule.Must(m => keys(m)?.All(k => !string.IsNullOrWhiteSpace(k)) ?? true)
            .WithMessage("'metadata' keys must not be empty.");
        rule.Must(m => keys(m)?.All(k => k.Length <= options.MaxMetadataKeyLength) ?? true)
            .WithMessage($"'metadata' keys may be at most {options.MaxMetadataKeyLength} characters.").AsLimit();
        rule.Must(m => values(m)?.All(v => v is null || v.Length <= options.MaxMetadataValueLength) ?? true)
            .WithMessage($"'metadata' values may be at most {options.MaxMetadataValueLength} characters.").AsLimit();
    }

    /// <summary>The title's length as stored: without the spaces around it, which are trimmed.</summary>
    public static void Title<T>(IRuleBuilder<T, string?> rule, ConversationsOptions options)
        => rule.Must(t => t is null || t.Trim().Length <= options.MaxTitleLength)
            .WithMessage($"'title' may be at most {options.MaxTitleLength} characters.").AsLimit();
}

internal sealed class NewMessageValidator : AbstractValidator<NewMessage>
{
    public NewMessageValidator(IOptions<ConversationsOptions> options)
    {
        var o = options.Value;
        RuleFor(m => m.Role)
            .NotEmpty().WithMessage("'role' is required: one of user, assistant, system, tool.");
        RuleFor(m => m.Role)
            .Must(r => MessageRoles.TryParse(r, out _))
            .When(m => !string.IsNullOrEmpty(m.Role))
            .WithMessage(m => $"'role' must be one of user, assistant, system, tool (was '{m.Role}').");
        RuleFor(m => m.Content)
            .Must(c => !string.IsNullOrWhiteSpace(c)).WithMessage("'content' is required and must not be empty.");
        RuleFor(m => m.Content)
            .Must(c => c is null || c.Length <= o.MaxContentLength)
            .WithMessage(m => $"'content' may be at most {o.MaxContentLength} characters (was {m.Content!.Length}).").AsLimit();
        RuleFor(m => m.ExternalId)
            .Must(e => e is null || !string.IsNullOrWhiteSpace(e)).WithMessage("'externalId' must not be blank when given.")
            .Must(e => e is null || e.Length <= o.MaxExternalIdLength)
            .WithMessage($"'externalId' may be at most {o.MaxExternalIdLength} characters.").AsLimit();
        // The two ends of .NET's range are what clients send for "no date" (and PostgreSQL would store them as
        // -infinity/infinity, which no month, year or age can be computed from). Judged as stored, to the microsecond: a
        // tick after the first is stored as the first.
        RuleFor(m => m.CreatedAt)
            .Must(c => c is null || (c.Value.TruncateToMicroseconds() > DateTimeOffset.MinValue && c < DateTimeOffset.MaxValue))
            .WithMessage(m => $"'createdAt' must be a real date, not {m.CreatedAt:O} (leave it out to use the time the message is stored).");
        ConversationRules.Metadata(RuleFor(m => m.Metadata), o);
    }
}
