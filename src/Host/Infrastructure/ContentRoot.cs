namespace ModularChat.Host.Infrastructure;

/// <summary>
/// Where the Host reads appsettings*.json from. ASP.NET Core takes the working directory; an operator who starts the
/// published build from elsewhere (<c>dotnet /srv/modularchat/ModularChat.Host.dll</c>) got none of its settings, with
/// no warning: no log levels (every SQL statement and request body logged), code defaults for the rest.
/// </summary>
internal static class ContentRoot
{
    private const string Settings = "appsettings.json";

    /// <summary>
    /// The directory of the Host's own files when the working directory has no <c>appsettings.json</c> and nothing chose a
    /// content root (<c>--contentRoot</c>, <c>ASPNETCORE_CONTENTROOT</c>, <c>DOTNET_CONTENTROOT</c>); otherwise null, ASP.NET Core's choice.
    /// </summary>
    public static string? For(string[] args)
    {
        var chosen = args.Any(a => a.StartsWith("--contentRoot", StringComparison.OrdinalIgnoreCase))
            || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("ASPNETCORE_CONTENTROOT"))
            || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOTNET_CONTENTROOT"));
        return chosen || File.Exists(Path.Combine(Directory.GetCurrentDirectory(), Settings)) || !File.Exists(Path.Combine(AppContext.BaseDirectory, Settings))
            ? null
            : AppContext.BaseDirectory;
    }
}
