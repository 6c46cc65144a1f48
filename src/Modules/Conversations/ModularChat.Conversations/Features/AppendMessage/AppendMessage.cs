using FluentValidation;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Tenancy;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Conversations.Domain;

namespace ModularChat.Conversations.Features.AppendMessage;

/// <summary>Body of <c>POST /api/conversations/{id}/messages</c>.</summary>
/// <param name="ExpectedVersion">When given, the append only happens if the conversation is still at this version (409 otherwise).</param>
public sealed record AppendMessageRequest(
    string? Role,
    string? Content,
    string? ExternalId,
    Dictionary<string, string>? Metadata,
    DateTimeOffset? CreatedAt,
    long? ExpectedVersion);

/// <summary>Body of <c>POST /api/conversations/{id}/messages/batch</c>: appended in one transaction, all or nothing.</summary>
public sealed record AppendMessagesRequest(List<NewMessage>? Messages, long? ExpectedVersion);

/// <summary>What an append stored (or found already stored, when <see cref="Duplicate"/>).</summary>
/// <param name="Duplicate">True when a message with the same externalId already existed: nothing new was stored.</param>
public sealed record AppendedMessage(Guid Id, long Sequence, string? ExternalId, int TokenCount, DateTimeOffset CreatedAt, bool Duplicate);

/// <summary>The result of an append: the messages and the conversation's version afterwards.</summary>
public sealed record AppendResult(Guid ConversationId, long Version, IReadOnlyList<AppendedMessage> Messages)
{
    internal bool StoredAny => Messages.Any(m => !m.Duplicate);
}

/// <param name="FirstStoredWins">See <see cref="PreparedAppend.FirstStoredWins"/> (false: a changed retry answers 409).</param>
internal sealed record AppendMessages(
    Guid ConversationId, IReadOnlyList<NewMessage> Messages, long? ExpectedVersion, bool IsBatch, bool FirstStoredWins = false)
    : ICommand<AppendResult>;

internal sealed class AppendMessagesValidator : AbstractValidator<AppendMessages>
{
    public AppendMessagesValidator(IOptions<ConversationsOptions> options, IValidator<NewMessage> message)
    {
        var max = options.Value.MaxBatchSize;
        RuleFor(c => c.Messages).NotEmpty().WithMessage("'messages' must contain at least one message.");
        RuleFor(c => c.Messages.Count).LessThanOrEqualTo(max).OverridePropertyName("messages")
            .WithMessage(c => $"A batch may hold at most {max} messages (was {c.Messages.Count}).").AsLimit();
        // Batches are indexed ("messages[3].content"); a single message reports its fields plainly ("content").
        // A JSON null in the array is no message (the child validator would skip it and the handler fail on it).
        RuleForEach(c => c.Messages).NotNull().OverridePropertyName("messages")
            .WithMessage((_, _) => "Each of 'messages' must be a message object, not null.").When(c => c.IsBatch && c.Messages.Count <= max);
        RuleForEach(c => c.Messages).SetValidator(message).When(c => c.IsBatch && c.Messages.Count <= max);
        RuleFor(c => c.Messages[0]).SetValidator(message).OverridePropertyName("").When(c => !c.IsBatch && c.Messages.Count == 1);
        RuleFor(c => c.ExpectedVersion).GreaterThan(0).WithMessage("'expectedVersion' must be positive.");
    }
}

/// <summary>
/// Appends under the conversation stream's row lock, through <see cref="AppendGroups"/>: concurrent appends of a
/// tenant share a transaction. Concurrent appends to one conversation queue on the lock (or are decided in order
/// inside one transaction), so each gets the next sequence exactly once and a retried message is found rather than
/// stored twice.
/// </summary>
internal sealed class AppendMessagesHandler(TenantContext tenant, ITokenCounter tokens, AppendGroups groups)
    : ICommandHandler<AppendMessages, AppendResult>
{
    public async ValueTask<AppendResult> Handle(AppendMessages command, CancellationToken cancellationToken)
    {
        // CPU work once, before waiting for a transaction.
        var prepared = command.Messages.Select(m =>
        {
            MessageRoles.TryParse(m.Role, out var role);
            return (Message: m, Role: role, Tokens: tokens.Count(m.Content!));
        }).ToList();
        return await groups.AppendAsync(tenant.TenantId, new PreparedAppend(command.ConversationId, prepared, command.ExpectedVersion, command.FirstStoredWins), cancellationToken);
    }
}

internal static class AppendMessageEndpoints
{
    public static void MapAppendMessage(this IEndpointRouteBuilder group)
    {
        group.MapPost("/{id}/messages", async Task<Results<Created<MessageAppendResponse>, Ok<MessageAppendResponse>>> (
                Guid id, AppendMessageRequest body, ISender sender, CancellationToken ct) =>
            {
                var message = new NewMessage(body.Role, body.Content, body.ExternalId, body.Metadata, body.CreatedAt);
                var result = await sender.Send(new AppendMessages(id, [message], body.ExpectedVersion, IsBatch: false), ct);
                var response = MessageAppendResponse.From(result);
                return result.StoredAny
                    ? TypedResults.Created($"/api/conversations/{id}/messages/{response.Sequence}", response)
                    : TypedResults.Ok(response);
            })
            .WithName("AppendMessage")
            .WithSummary("Append a message")
            .WithDescription("Idempotent on externalId: a retry returns the original message (200) and stores nothing new; the same externalId with another role or content is refused (409).")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity);

        group.MapPost("/{id}/messages/batch", async Task<Results<Created<AppendResult>, Ok<AppendResult>>> (
                Guid id, AppendMessagesRequest body, ISender sender, CancellationToken ct) =>
            {
                var result = await sender.Send(new AppendMessages(id, body.Messages ?? [], body.ExpectedVersion, IsBatch: true), ct);
                return result.StoredAny
                    ? TypedResults.Created($"/api/conversations/{id}/messages", result)
                    : TypedResults.Ok(result);
            })
            .WithName("AppendMessages")
            .WithSummary("Append many messages in one transaction (all or nothing)")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity);
    }
}

/// <summary>The response of a single append.</summary>
/// <param name="Version">The conversation's version after the append: pass it as expectedVersion to append only if nothing changed since.</param>
/// <param name="Duplicate">True when a message with the same externalId already existed and was returned instead.</param>
public sealed record MessageAppendResponse(
    Guid ConversationId, Guid Id, long Sequence, string? ExternalId, int TokenCount, DateTimeOffset CreatedAt, long Version, bool Duplicate)
{
    internal static MessageAppendResponse From(AppendResult result)
    {
        var m = result.Messages[0];
        return new(result.ConversationId, m.Id, m.Sequence, m.ExternalId, m.TokenCount, m.CreatedAt, result.Version, m.Duplicate);
    }
}
