using FluentValidation;
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

internal sealed record CreateProvider(
    string? Name, string? Kind, string? Endpoint, string? ChatModel, string? SummaryModel, string? EmbeddingModel, string? ApiKey, bool? IsDefault)
    : ICommand<ProviderResponse>, IProviderFields
{
    /// <summary>Never prints the key.</summary>
    public override string ToString() => $"CreateProvider {{ Name = {Name}, Kind = {Kind} }}";
}

internal sealed class CreateProviderValidator : ProviderFieldsValidator<CreateProvider>
{
    public CreateProviderValidator(IOptions<ProvidersOptions> options, OutboundNetwork network)
        : base(options, network)
        => RuleFor(r => r.ApiKey).Must(k => !string.IsNullOrEmpty(k)).When(r => r.Kind == ProviderKinds.AzureOpenAi)
            .WithMessage("'apiKey' is required for azure-openai.");
}

internal sealed class CreateProviderHandler(
    TenantSessions sessions, SecretBox secrets, ProviderDirectory directory, IOptions<ProvidersOptions> options, TimeProvider clock)
    : ICommandHandler<CreateProvider, ProviderResponse>
{
    public async ValueTask<ProviderResponse> Handle(CreateProvider command, CancellationToken cancellationToken)
    {
        var tenant = sessions.TenantId;
        await using var session = sessions.Write();
        await ProviderStore.LockTenantAsync(session, ProviderStore.ProvidersLock, cancellationToken);
        var all = await session.Query<ProviderSettings>().ToListAsync(cancellationToken);
        var name = command.Name!.Trim();
        if (ProviderSettings.NameTaken(all.Select(p => p.Name), name))
        {
            throw Duplicate(name);
        }

        if (all.Count >= options.Value.MaxProvidersPerTenant)
        {
            throw new LimitExceededException("name", $"A tenant may have at most {options.Value.MaxProvidersPerTenant} providers (Providers:MaxProvidersPerTenant).");
        }

        var now = clock.GetUtcNow();
        var provider = new ProviderSettings
        {
            Id = Guid.CreateVersion7(),
            TenantId = tenant,
            Name = name,
            NormalizedName = ProviderSettings.Normalize(name),
            Kind = command.Kind!,
            Endpoint = ProviderStore.Endpoint(command),
            ChatModel = command.ChatModel!.Trim(),
            SummaryModel = ProviderStore.Optional(command.SummaryModel),
            EmbeddingModel = ProviderStore.Optional(command.EmbeddingModel),
            CreatedAt = now,
            UpdatedAt = now,
        };
        if (!string.IsNullOrEmpty(command.ApiKey))
        {
            provider.EncryptedApiKey = secrets.Protect(tenant, command.ApiKey);
            provider.ApiKeyHint = SecretBox.Hint(command.ApiKey);
        }

        // The first provider is the default unless told otherwise; a new default replaces the old one.
        if (command.IsDefault ?? !all.Any(p => p.IsDefault))
        {
            ProviderStore.MakeDefault(session, all, provider);
        }

        session.Store(provider);
        try
        {
            await session.SaveChangesAsync(cancellationToken);
        }
        catch (Exception e) when (ProviderStore.IsUniqueViolation(e))
        {
            throw Duplicate(name);
        }
        finally
        {
            await directory.ChangedAsync(tenant);
        }

        return ProviderResponse.From(provider);
    }

    internal static ConflictException Duplicate(string name)
        => new($"A provider named '{name}' already exists: choose another name, or update it with PUT /api/providers/{{id}}.",
            new Dictionary<string, object?> { ["field"] = "name" });
}

internal static class CreateProviderEndpoint
{
    public static void MapCreateProvider(this IEndpointRouteBuilder group) =>
        group.MapPost("/", async Task<Created<ProviderResponse>> (ProviderRequest body, ISender sender, CancellationToken ct) =>
            {
                var created = await sender.Send(new CreateProvider(
                    body.Name, body.Kind, body.Endpoint, body.ChatModel, body.SummaryModel, body.EmbeddingModel, body.ApiKey, body.IsDefault), ct);
                return TypedResults.Created($"/api/providers/{created.Id}", created);
            })
            .WithName("CreateProvider")
            .WithSummary("Add an LLM provider")
            .WithDescription("The API key is encrypted at rest and never returned; responses show a masked hint.")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status422UnprocessableEntity);
}
