using Marten;
using Mediator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Providers.Clients;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Network;
using ModularChat.Providers.Secrets;

namespace ModularChat.Providers.Features.Providers;

internal sealed record UpdateProvider(
    Guid Id, string? Name, string? Kind, string? Endpoint, string? ChatModel, string? SummaryModel, string? EmbeddingModel, string? ApiKey, bool? IsDefault)
    : ICommand<ProviderResponse>, IProviderFields
{
    public override string ToString() => $"UpdateProvider {{ Id = {Id}, Name = {Name}, Kind = {Kind} }}";
}

internal sealed class UpdateProviderValidator(IOptions<ProvidersOptions> options, OutboundNetwork network)
    : ProviderFieldsValidator<UpdateProvider>(options, network);

internal sealed class UpdateProviderHandler(TenantSessions sessions, SecretBox secrets, ProviderDirectory directory, TimeProvider clock)
    : ICommandHandler<UpdateProvider, ProviderResponse>
{
    public async ValueTask<ProviderResponse> Handle(UpdateProvider command, CancellationToken cancellationToken)
    {
        var tenant = sessions.TenantId;
        await using var session = sessions.Write();
        await ProviderStore.LockTenantAsync(session, ProviderStore.ProvidersLock, cancellationToken);
        var all = await session.Query<ProviderSettings>().ToListAsync(cancellationToken);
        var provider = all.SingleOrDefault(p => p.Id == command.Id) ?? throw new NotFoundException("Provider", command.Id);
        var name = command.Name!.Trim();
        if (ProviderSettings.NameTaken(all.Where(p => p.Id != provider.Id).Select(p => p.Name), name))
        {
            throw CreateProviderHandler.Duplicate(name);
        }

        var endpoint = ProviderStore.Endpoint(command);
        if (command.ApiKey is null && provider.EncryptedApiKey is not null && !ProviderStore.SameServer(provider.Endpoint, endpoint))
        {
            throw new BadRequestException("apiKey",
                $"'apiKey' must be sent again when 'endpoint' moves to another server ({ProviderStore.Origin(provider.Endpoint)} to " +
                $"{ProviderStore.Origin(endpoint)}): the stored key is only sent to the server it was given for. Send \"\" to remove it.");
        }

        provider.Name = name;
        provider.NormalizedName = ProviderSettings.Normalize(name);
        provider.Kind = command.Kind!;
        provider.Endpoint = endpoint;
        provider.ChatModel = command.ChatModel!.Trim();
        provider.SummaryModel = ProviderStore.Optional(command.SummaryModel);
        provider.EmbeddingModel = ProviderStore.Optional(command.EmbeddingModel);
        provider.UpdatedAt = clock.GetUtcNow();
        switch (command.ApiKey)
        {
            case null:
                break; // keep the stored key (clients never see it, so they cannot send it back); the same server only, see above
            case "":
                provider.EncryptedApiKey = null;
                provider.ApiKeyHint = null;
                break;
            default:
                provider.EncryptedApiKey = secrets.Protect(tenant, command.ApiKey);
                provider.ApiKeyHint = SecretBox.Hint(command.ApiKey);
                break;
        }

        if (provider.Kind == ProviderKinds.AzureOpenAi && provider.EncryptedApiKey is null)
        {
            throw new FluentValidation.ValidationException([new FluentValidation.Results.ValidationFailure("apiKey", "'apiKey' is required for azure-openai.")]);
        }

        if (command.IsDefault == true)
        {
            ProviderStore.MakeDefault(session, all, provider);
        }
        else if (command.IsDefault == false && provider.IsDefault
                 && all.Where(p => p.Id != provider.Id).OrderBy(p => p.CreatedAt).FirstOrDefault() is { } next)
        {
            // The tenant keeps a default while it has providers: the oldest other one takes over.
            ProviderStore.MakeDefault(session, all, next);
            session.Store(next);
        }

        session.Store(provider);
        try
        {
            await session.SaveChangesAsync(cancellationToken);
        }
        catch (Exception e) when (ProviderStore.IsUniqueViolation(e))
        {
            throw CreateProviderHandler.Duplicate(name);
        }
        finally
        {
            await directory.ChangedAsync(tenant);
        }

        return ProviderResponse.From(provider);
    }
}

internal static class UpdateProviderEndpoint
{
    public static void MapUpdateProvider(this IEndpointRouteBuilder group) =>
        group.MapPut("/{id}", async Task<Ok<ProviderResponse>> (Guid id, ProviderRequest body, ISender sender, CancellationToken ct)
                => TypedResults.Ok(await sender.Send(new UpdateProvider(
                    id, body.Name, body.Kind, body.Endpoint, body.ChatModel, body.SummaryModel, body.EmbeddingModel, body.ApiKey, body.IsDefault), ct)))
            .WithName("UpdateProvider")
            .WithSummary("Replace a provider's settings")
            .WithDescription("Leave 'apiKey' out to keep the stored key, send \"\" to remove it. A stored key is kept for the same server only: " +
                "when 'endpoint' moves to another scheme, host or port, 'apiKey' must be sent again (400 otherwise).")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict);
}
