using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace ModularChat.Host.Infrastructure;

internal static class OpenApiSetup
{
    public static IServiceCollection AddModularChatOpenApi(this IServiceCollection services)
        => services.AddOpenApi(o =>
        {
            o.AddDocumentTransformer<BearerSecurityScheme>();
            o.AddOperationTransformer<CommonErrorResponses>();
            o.AddSchemaTransformer(TypeNullableStrings);
            o.AddSchemaTransformer(TypeStringArrays);
        });

    /// <summary>
    /// A <c>string?</c> property (a message's role and content, an external id, a title...) or query parameter (a
    /// cursor, a search's q, a direction) comes out of the generator as an empty schema, "anything": clients generated
    /// from the document would type it as such. It is a string or null.
    /// </summary>
    private static Task TypeNullableStrings(OpenApiSchema schema, OpenApiSchemaTransformerContext context, CancellationToken cancellationToken)
    {
        if ((context.JsonPropertyInfo?.PropertyType ?? context.JsonTypeInfo.Type) == typeof(string) && schema.Type is null
            && schema.OneOf is not { Count: > 0 } && schema.AnyOf is not { Count: > 0 } && schema.AllOf is not { Count: > 0 })
        {
            schema.Type = JsonSchemaType.String | JsonSchemaType.Null;
        }

        return Task.CompletedTask;
    }

    /// <summary>
    /// A list of strings (a stdio server's arguments, a test's warnings, validation errors, repeated query values) comes
    /// out as an array without <c>items</c>, "an array of anything", for the same reason: its items are strings.
    /// </summary>
    private static Task TypeStringArrays(OpenApiSchema schema, OpenApiSchemaTransformerContext context, CancellationToken cancellationToken)
    {
        if (schema.Type is { } type && type.HasFlag(JsonSchemaType.Array) && schema.Items is null
            && context.JsonTypeInfo.ElementType is { } element && (Nullable.GetUnderlyingType(element) ?? element) == typeof(string))
        {
            schema.Items = new OpenApiSchema { Type = JsonSchemaType.String };
        }

        return Task.CompletedTask;
    }

    /// <summary>Declares the JWT bearer scheme so the API page can send a token.</summary>
    private sealed class BearerSecurityScheme : IOpenApiDocumentTransformer
    {
        public Task TransformAsync(OpenApiDocument document, OpenApiDocumentTransformerContext context, CancellationToken cancellationToken)
        {
            document.Info.Title = "ModularChat API";
            document.Info.Description = "Conversation memory for LLM chat applications. Every endpoint needs a JWT bearer token (locally: ./build.sh token --sub <you>) but health, this document and the API page.";
            document.Components ??= new OpenApiComponents();
            document.Components.SecuritySchemes ??= new Dictionary<string, IOpenApiSecurityScheme>();
            document.Components.SecuritySchemes["Bearer"] = new OpenApiSecurityScheme
            {
                Type = SecuritySchemeType.Http,
                Scheme = "bearer",
                BearerFormat = "JWT",
                Description = "A JWT whose 'tenant' (else 'sub') claim names the tenant.",
            };
            document.Security ??= [];
            document.Security.Add(new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference("Bearer", document)] = [] });
            return Task.CompletedTask;
        }
    }

    /// <summary>
    /// The error answers every authenticated endpoint can give besides its own, so clients generated from the document know
    /// them: 401 (no valid token), 403 where the endpoint needs a role, 503 with Retry-After (the database, or the identity
    /// provider's keys, unreachable or too slow). Each endpoint declares only its own (404, 409, 422...).
    /// </summary>
    private sealed class CommonErrorResponses : IOpenApiOperationTransformer
    {
        private const string ProblemJson = "application/problem+json";

        public async Task TransformAsync(OpenApiOperation operation, OpenApiOperationTransformerContext context, CancellationToken cancellationToken)
        {
            var metadata = context.Description.ActionDescriptor.EndpointMetadata;
            var authorization = metadata.OfType<IAuthorizeData>().ToList();
            if (authorization.Count == 0 || metadata.OfType<IAllowAnonymous>().Any())
            {
                return;
            }

            operation.Responses ??= [];
            var problem = operation.Responses.Values
                .Select(r => r.Content is { } content && content.TryGetValue(ProblemJson, out var media) ? media.Schema : null)
                .FirstOrDefault(s => s is not null)
                ?? await context.GetOrCreateSchemaAsync(typeof(ProblemDetails), null, cancellationToken);
            Add("401", "No valid bearer token: missing, expired, not signed by a trusted key, or naming no tenant.");
            if (authorization.Any(a => !string.IsNullOrEmpty(a.Policy) || !string.IsNullOrEmpty(a.Roles)))
            {
                Add("403", "The token lacks the role this endpoint needs (the answer names the role and the claim it is read from).");
            }

            Add("503", "The database or the identity provider's keys cannot be reached, or did not answer in time: retry after Retry-After.");

            void Add(string status, string description)
                => operation.Responses.TryAdd(status, new OpenApiResponse
                {
                    Description = description,
                    Content = new Dictionary<string, OpenApiMediaType> { [ProblemJson] = new() { Schema = problem } },
                });
        }
    }
}
