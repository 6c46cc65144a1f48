using ModularChat.BuildingBlocks.Options;
using Scalar.AspNetCore;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// The OpenAPI document (<c>/openapi/v1.json</c>), the interactive API page (<c>/scalar</c>) and <c>/</c>, which
/// redirects to it: served without a token, so an operator whose deployment must not describe itself to anyone who asks
/// turns them off (<c>OpenApi:Enabled=false</c>); they then answer as any path the service does not serve: 401
/// without a token, 404 with one. On by default: the document
/// says nothing a client of the API does not learn from using it, and it is how clients are generated.
/// </summary>
internal static class ApiDocument
{
    public const string EnabledSetting = "OpenApi:Enabled";

    /// <summary>Whether the document and the page are served; a value that is not true or false stops the start naming the setting.</summary>
    public static bool Enabled(IConfiguration configuration) => configuration[EnabledSetting] switch
    {
        null or "" => true,
        var value when bool.TryParse(value, out var enabled) => enabled,
        var value => throw new StartRefusedException($"Configuration '{EnabledSetting}' must be true or false (was '{value}')."),
    };

    /// <summary>Maps the document, the page and the redirect to it, unless <see cref="EnabledSetting"/> turns them off.</summary>
    public static void MapApiDocument(this WebApplication app)
    {
        if (!Enabled(app.Configuration))
        {
            return;
        }

        // The one document there is, at a fixed path: the default pattern (/openapi/{documentName}.json) answered any other
        // name with its own 404 in text/plain instead of a ProblemDetails.
        app.MapOpenApi("/openapi/v1.json").AllowAnonymous();
        app.MapScalarApiReference(o => o.WithTitle("ModularChat API")).AllowAnonymous();
        app.MapGet("/", () => Results.Redirect("/scalar")).AllowAnonymous().ExcludeFromDescription();
    }
}
