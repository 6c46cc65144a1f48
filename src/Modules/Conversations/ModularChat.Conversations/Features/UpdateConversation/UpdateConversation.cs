using FluentValidation;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations.Features.UpdateConversation;

/// <summary>Body of <c>PATCH /api/conversations/{id}</c>: what is left out stays as it is.</summary>
/// <param name="Title">The new title.</param>
/// <param name="Metadata">
/// Changes to the metadata, as a JSON merge patch (RFC 7396): a key with a string sets it, a key with <c>null</c>
/// removes it, keys not named stay.
/// </param>
/// <param name="ExpectedVersion">When given, the change only applies if the conversation is still at this version (409 otherwise).</param>
public sealed record UpdateConversationRequest(string? Title, Dictionary<string, string?>? Metadata, long? ExpectedVersion);

internal sealed record UpdateConversation(Guid ConversationId, string? Title, Dictionary<string, string?>? Metadata, long? ExpectedVersion)
    : ICommand<ConversationResponse>;

internal sealed class UpdateConversationValidator : AbstractValidator<UpdateConversation>
{
    public UpdateConversationValidator(IOptions<ConversationsOptions> options)
    {
        RuleFor(c => c)
            .Must(c => c.Title is not null || c.Metadata is not null)
            .WithName("body")
            .WithMessage("Send 'title', 'metadata' or both: nothing else can be changed.");
        RuleFor(c => c.Title).Must(t => t is null || !string.IsNullOrWhiteSpace(t)).WithMessage("'title' must not be empty when given.");
        ConversationRules.Title(RuleFor(c => c.Title), options.Value);
        ConversationRules.MetadataPatch(RuleFor(c => c.Metadata), options.Value);
        RuleFor(c => c.ExpectedVersion).GreaterThan(0).WithMessage("'expectedVersion' must be positive.");
    }
}

/// <summary>
/// Appends a <see cref="ConversationRenamed"/> when the title changes and a <see cref="ConversationMetadataChanged"/> when
/// the metadata does; a change to what is already there appends nothing (the version stays).
/// </summary>
internal sealed class UpdateConversationHandler(TenantSessions sessions, TimeProvider clock, IOptions<ConversationsOptions> options)
    : ICommandHandler<UpdateConversation, ConversationResponse>
{
    public async ValueTask<ConversationResponse> Handle(UpdateConversation command, CancellationToken cancellationToken)
    {
        await using var session = sessions.Write();
        var stream = await ConversationStreams.FetchForUpdate(session, command.ConversationId, command.ExpectedVersion, cancellationToken);
        var current = stream.Aggregate!;
        var now = clock.GetUtcNow().TruncateToMicroseconds();
        var updated = current;
        var changes = new List<object>(2);

        if (command.Title?.Trim() is { } title && title != current.Title)
        {
            var renamed = new ConversationRenamed(command.ConversationId, title, now);
            changes.Add(renamed);
            updated = updated.Apply(renamed);
        }

        if (command.Metadata is { } patch && Merge(current.Metadata, patch) is { } metadata)
        {
            var max = options.Value.MaxMetadataEntries;
            if (metadata.Count > max)
            {
                throw new LimitExceededException(
                    "metadata", $"'metadata' may have at most {max} entries; with this change it would have {metadata.Count}.");
            }

            var changed = new ConversationMetadataChanged(command.ConversationId, metadata, now);
            changes.Add(changed);
            updated = updated.Apply(changed);
        }

        if (changes.Count > 0)
        {
            stream.AppendMany(changes);
            await session.SaveChangesAsync(cancellationToken);
        }

        return ConversationResponse.From(updated with { Version = current.Version + changes.Count });
    }

    /// <summary><paramref name="metadata"/> with <paramref name="patch"/> applied, or null when that changes nothing.</summary>
    private static Dictionary<string, string>? Merge(IReadOnlyDictionary<string, string> metadata, Dictionary<string, string?> patch)
    {
        var merged = new Dictionary<string, string>(metadata, StringComparer.Ordinal);
        var changed = false;
        foreach (var (key, value) in patch)
        {
            if (value is null)
            {
                changed |= merged.Remove(key);
            }
            else if (!merged.TryGetValue(key, out var old) || old != value)
            {
                merged[key] = value;
                changed = true;
            }
        }

        return changed ? merged : null;
    }
}

internal static class UpdateConversationEndpoint
{
    public static void MapUpdateConversation(this IEndpointRouteBuilder group) =>
        group.MapPatch("/{id}", async Task<Ok<ConversationResponse>> (Guid id, UpdateConversationRequest body, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new UpdateConversation(id, body.Title, body.Metadata, body.ExpectedVersion), ct)))
            .WithName("UpdateConversation")
            .WithSummary("Rename a conversation or change its metadata")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity);
}
