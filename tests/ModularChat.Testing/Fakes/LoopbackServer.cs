using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace ModularChat.Testing.Fakes;

/// <summary>The real HTTP servers that stand in for external systems in tests: Kestrel on a free loopback port, silent.</summary>
public static class LoopbackServer
{
    /// <summary>A slim web application that will listen on a free port of 127.0.0.1 and log nothing.</summary>
    public static WebApplicationBuilder CreateBuilder()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        return builder;
    }

    /// <summary>Starts <paramref name="app"/> and returns its root, e.g. <c>http://127.0.0.1:41234</c> (no trailing slash).</summary>
    public static async Task<string> StartAsync(WebApplication app)
    {
        await app.StartAsync();
        return app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
    }
}
