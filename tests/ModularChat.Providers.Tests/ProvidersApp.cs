using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModelContextProtocol.Protocol;
using ModelContextProtocol.Server;
using ModularChat.McpTestServer;
using ModularChat.Testing.Fakes;

namespace ModularChat.Providers.Tests;

/// <summary>
/// The shared host of this assembly, and the real servers it talks to on loopback: an OpenAI-compatible model server,
/// MCP servers over streamable HTTP and SSE (ModelContextProtocol.AspNetCore), the stdio MCP test program, and a
/// listener that accepts connections and never answers. Every log line and every span the host produces is captured,
/// so tests can look for secrets in them. The assembly's collections each have one, on a database of its own
/// (<see cref="ProvidersChatApp"/>, <see cref="ProvidersMcpApp"/>, <see cref="SystemProxyApp"/>).
/// </summary>
public class ProvidersApp : ModularChatApp
{
    public ProvidersApp()
    {
    }

    /// <param name="databaseName">The fixture's database, for the collections beside the main one.</param>
    protected ProvidersApp(string databaseName)
        : base(databaseName)
    {
    }

    /// <summary>The value the MCP HTTP server requires in X-Api-Key.</summary>
    public const string McpApiKey = "mcp-secret-7f3a9c2e1b";

    private ActivityListener? _listener;

    public FakeOpenAiServer Model { get; private set; } = null!;

    /// <summary>A tenant whose retention deletes every message a summary covers (milestone 10).</summary>
    public string DeletingTenant { get; } = NewUser("deleting");

    public McpHttpServer Mcp { get; private set; } = null!;

    public SilentServer Silent { get; private set; } = null!;

    public CapturedLogs Logs { get; } = new();

    public ConcurrentQueue<string> Traces { get; } = new();

    /// <summary>
    /// Gives the client's tenant a provider on the fake model and the calculator MCP server (streamable HTTP), and
    /// starts a conversation.
    /// </summary>
    public async Task<Guid> StartWithCalculatorAsync(HttpClient client)
    {
        await client.AddProviderAsync(Model.BaseUrl);
        await client.AddMcpServerAsync("calculator", Mcp.StreamableHttpUrl);
        return await client.StartConversationAsync();
    }

    /// <summary>The dotnet executable that runs the stdio test program (the only allowlisted command).</summary>
    public static string Dotnet => Environment.ProcessPath is { } path && Path.GetFileNameWithoutExtension(path) == "dotnet" ? path : "dotnet";

    /// <summary>The stdio MCP test program, built beside the tests.</summary>
    public static string StdioServerDll => Path.Combine(AppContext.BaseDirectory, "ModularChat.McpTestServer.dll");

    protected override IDictionary<string, string?> Settings => new Dictionary<string, string?>
    {
        ["OutboundNetwork:AllowPrivateNetworks"] = "true", // everything the tests talk to is on loopback
        ["Providers:MaxRetries"] = "0",
        ["Providers:RequestTimeout"] = "00:00:04",
        ["Providers:TestTimeout"] = "00:00:04",
        // Generous: a stdio program is a new dotnet process, and on a busy machine (CI runs several test assemblies at once on
        // two cores) starting it, or answering a tool call, took more than the 3 s these were once, failing tests about
        // anything but the timeout. A test of what happens at the deadline shortens it with ShortMcpTimeouts.
        ["Mcp:ConnectTimeout"] = "00:00:30",
        ["Mcp:ToolCallTimeout"] = "00:00:30",
        // The stdio test program speaks MCP 2026-07-28: started slowly, it answered the handshake's server/discover after
        // the SDK's 5 s, when the client had already sent initialize instead, which it then refused.
        ["Mcp:DiscoverProbeTimeout"] = "00:00:25",
        ["OutboundNetwork:MaxResponseBytes"] = (8 * 1024 * 1024).ToString(CultureInfo.InvariantCulture),
        ["Mcp:Stdio:Enabled"] = "true",
        ["Mcp:Stdio:AllowedCommands:0"] = Dotnet,
        ["Chat:ContextTokenBudget"] = "300",
        ["Logging:LogLevel:Default"] = "Trace",
        ["Logging:LogLevel:Microsoft.AspNetCore"] = "Debug",
        ["Logging:LogLevel:Npgsql"] = "Debug",
        ["OpenTelemetry:AlwaysTrace"] = "true",
        [$"Retention:Tenants:{DeletingTenant}:Policy"] = "delete-after-summary",
        [$"Retention:Tenants:{DeletingTenant}:KeepLast"] = "0",
    };

    protected override void ConfigureServices(IServiceCollection services)
        => services.AddSingleton<ILoggerProvider>(Logs);

    /// <summary>
    /// Sets Mcp:ConnectTimeout and Mcp:ToolCallTimeout to <see cref="ShortMcpTimeout"/> on the host until disposed, for the
    /// tests of what happens when a server does not answer in time. The options are the host's own instances, read at each
    /// connection and call (IOptions and IOptionsMonitor keep one each); the tests of the collection run one at a time.
    /// </summary>
    public IDisposable ShortMcpTimeouts()
    {
        var settings = new[]
        {
            Host.Services.GetRequiredService<IOptions<McpOptions>>().Value,
            Host.Services.GetRequiredService<IOptionsMonitor<McpOptions>>().CurrentValue,
        };
        var before = settings.Select(o => (o.ConnectTimeout, o.ToolCallTimeout)).ToArray();
        foreach (var options in settings)
        {
            (options.ConnectTimeout, options.ToolCallTimeout) = (ShortMcpTimeout, ShortMcpTimeout);
        }

        return new Restore(() =>
        {
            for (var i = 0; i < settings.Length; i++)
            {
                (settings[i].ConnectTimeout, settings[i].ToolCallTimeout) = before[i];
            }
        });
    }

    /// <summary>
    /// Adds <paramref name="commands"/> to Mcp:Stdio:AllowedCommands on the host until disposed (the host's own option
    /// instances, as <see cref="ShortMcpTimeouts"/> changes them), for tests of programs other than the test program.
    /// </summary>
    public IDisposable AllowStdioCommands(params string[] commands)
    {
        var settings = new[]
        {
            Host.Services.GetRequiredService<IOptions<McpOptions>>().Value,
            Host.Services.GetRequiredService<IOptionsMonitor<McpOptions>>().CurrentValue,
        }.Distinct().ToArray();
        var before = settings.Select(o => o.Stdio.AllowedCommands.ToList()).ToArray();
        foreach (var options in settings)
        {
            options.Stdio.AllowedCommands.AddRange(commands);
        }

        return new Restore(() =>
        {
            for (var i = 0; i < settings.Length; i++)
            {
                settings[i].Stdio.AllowedCommands = before[i];
            }
        });
    }

    /// <summary>
    /// Sets Mcp:Stdio:AllowedEnvironment on the host to <paramref name="names"/> until disposed (the host's own option
    /// instances, as <see cref="AllowStdioCommands"/> changes them).
    /// </summary>
    public IDisposable AllowStdioEnvironment(params string[] names)
    {
        var settings = new[]
        {
            Host.Services.GetRequiredService<IOptions<McpOptions>>().Value,
            Host.Services.GetRequiredService<IOptionsMonitor<McpOptions>>().CurrentValue,
        }.Distinct().ToArray();
        var before = settings.Select(o => o.Stdio.AllowedEnvironment).ToArray();
        foreach (var options in settings)
        {
            options.Stdio.AllowedEnvironment = [.. names];
        }

        return new Restore(() =>
        {
            for (var i = 0; i < settings.Length; i++)
            {
                settings[i].Stdio.AllowedEnvironment = before[i];
            }
        });
    }

    /// <summary>The MCP timeouts under <see cref="ShortMcpTimeouts"/> (the messages the tests expect say "3 s").</summary>
    public static readonly TimeSpan ShortMcpTimeout = TimeSpan.FromSeconds(3);

    private sealed class Restore(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }

    public override async Task InitializeAsync()
    {
        _listener = new ActivityListener
        {
            ShouldListenTo = _ => true,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => Traces.Enqueue(Describe(a)),
        };
        ActivitySource.AddActivityListener(_listener);
        Model = await FakeOpenAiServer.StartAsync();
        Mcp = await McpHttpServer.StartAsync();
        Silent = SilentServer.Start();
        await base.InitializeAsync();
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Model.DisposeAsync();
        await Mcp.DisposeAsync();
        Silent.Dispose();
        _listener?.Dispose();
    }

    private static string Describe(Activity a)
        => string.Join(" | ", new[] { a.Source.Name, a.DisplayName, a.StatusDescription ?? "" }
            .Concat(a.TagObjects.Select(t => $"{t.Key}={t.Value}"))
            .Concat(a.Events.SelectMany(e => e.Tags.Select(t => $"{e.Name}:{t.Key}={t.Value}")))
            .Concat(a.Baggage.Select(b => $"{b.Key}={b.Value}")));
}

[CollectionDefinition(Name)]
public sealed class AppCollection : ICollectionFixture<ProvidersApp>
{
    public const string Name = "providers";
}

/// <summary>The fixture of the chat tests' collection (<see cref="ChatCollection"/>): a host and servers of its own.</summary>
public sealed class ProvidersChatApp() : ProvidersApp(TestDatabase("providers_chat"));

/// <summary>
/// The chat tests, beside the main collection: the assembly's tests were one collection (~9 min, among the longest
/// projects); each of its three collections now runs a third of them on a host of its own.
/// </summary>
[CollectionDefinition(Name)]
public sealed class ChatCollection : ICollectionFixture<ProvidersChatApp>
{
    public const string Name = "providers-chat";
}

/// <summary>The fixture of the MCP servers' and outbound network's collection (<see cref="McpCollection"/>).</summary>
public sealed class ProvidersMcpApp() : ProvidersApp(TestDatabase("providers_mcp"));

/// <summary>The MCP servers' tests (stdio and HTTP) and the outbound network's, beside the main collection.</summary>
[CollectionDefinition(Name)]
public sealed class McpCollection : ICollectionFixture<ProvidersMcpApp>
{
    public const string Name = "providers-mcp";
}

/// <summary>The fixture of <see cref="SystemProxyCollection"/>.</summary>
public sealed class SystemProxyApp() : ProvidersApp(TestDatabase("providers_system_proxy"));

/// <summary>
/// The test that sets the process-wide <see cref="HttpClient.DefaultProxy"/> (a system proxy, as HTTP_PROXY gives one)
/// to show that the outbound calls do not go through it: run alone, after the other collections (xunit runs a collection
/// that disables parallelization by itself), so that no other test's calls go through that proxy meanwhile. When the
/// assembly's tests were one collection it was alone by that; it kept them from being split.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SystemProxyCollection : ICollectionFixture<SystemProxyApp>
{
    public const string Name = "providers-system-proxy";
}

/// <summary>
/// A real MCP server over streamable HTTP (at /mcp) and legacy SSE (at /mcp/sse) on loopback Kestrel, built with
/// ModelContextProtocol.AspNetCore. Requests to /secured/... need X-Api-Key; a wrong one gets a 401 that echoes it,
/// as careless servers do.
/// </summary>
public sealed class McpHttpServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private McpHttpServer(WebApplication app, Uri baseUrl)
    {
        _app = app;
        BaseUrl = baseUrl;
    }

    public Uri BaseUrl { get; }

    public string StreamableHttpUrl => new Uri(BaseUrl, "/mcp").ToString();

    public string SseUrl => new Uri(BaseUrl, "/mcp/sse").ToString();

    public string SecuredUrl => new Uri(BaseUrl, "/secured/mcp").ToString();

    /// <summary>The hand-written server of <see cref="UnrulyMcpServer"/> in one of its modes.</summary>
    public string UnrulyUrl(string mode) => new Uri(BaseUrl, "/unruly/" + mode).ToString();

    /// <summary>The hand-written server of <see cref="UnrulyMcpServer"/> in one of its modes, over the legacy SSE transport.</summary>
    public string UnrulySseUrl(string mode) => new Uri(BaseUrl, "/unruly-sse/" + mode).ToString();

    /// <summary>A legacy SSE server whose stream tells the client to post its messages to <paramref name="port"/> on loopback.</summary>
    public string SseElsewhereUrl(int port) => new Uri(BaseUrl, "/unruly-sse/elsewhere/" + port.ToString(CultureInfo.InvariantCulture)).ToString();

    public static async Task<McpHttpServer> StartAsync()
    {
        var builder = LoopbackServer.CreateBuilder();
        builder.Services.AddMcpServer(o => o.ServerInfo = new Implementation { Name = "modularchat-test-http", Version = "2.0.0" })
            .WithHttpTransport(o =>
            {
                o.Stateless = false;
#pragma warning disable MCP9004 // the legacy SSE transport is exactly what the SSE tests need (loopback, trusted client)
                o.EnableLegacySse = true;
#pragma warning restore MCP9004
            })
            .WithTools(TestTools.Create());
        var app = builder.Build();
        app.Use(async (context, next) =>
        {
            if (context.Request.Path.StartsWithSegments("/secured"))
            {
                var key = context.Request.Headers["X-Api-Key"].ToString();
                if (key != ProvidersApp.McpApiKey)
                {
                    context.Response.StatusCode = 401;
                    await context.Response.WriteAsync($"invalid X-Api-Key: {key}; Authorization: {context.Request.Headers.Authorization}");
                    return;
                }
            }

            await next(context);
        });
        app.MapMcp("/mcp");
        app.MapMcp("/secured/mcp");
        app.MapUnrulyMcp();
        return new McpHttpServer(app, new Uri(await LoopbackServer.StartAsync(app)));
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>
/// A real MCP server over streamable HTTP (ModelContextProtocol.AspNetCore, stateful, the calculator's tools) that a test
/// stops and starts again on the same port: a server that restarts, forgetting its sessions (it then answers a request
/// with an unknown Mcp-Session-Id with 404, as the MCP specification says). Its tool <c>restart</c> restarts it while the
/// call is in flight: the call's connection drops mid-request.
/// </summary>
public sealed class RestartableMcpServer : IAsyncDisposable
{
    private WebApplication _app = null!;
    private int _port;

    private RestartableMcpServer()
    {
    }

    public string Url => $"http://127.0.0.1:{_port.ToString(CultureInfo.InvariantCulture)}/mcp";

    /// <summary>The latest restart its tool <c>restart</c> began (done when the server answers again).</summary>
    public Task Restarted { get; private set; } = Task.CompletedTask;

    public static async Task<RestartableMcpServer> StartAsync()
    {
        var server = new RestartableMcpServer();
        server._app = server.Build();
        server._port = new Uri(await LoopbackServer.StartAsync(server._app)).Port;
        return server;
    }

    /// <summary>Stops the server (its open streams are cut) and starts a new one on the same port, with no sessions.</summary>
    public async Task RestartAsync()
    {
        await StopAsync();
        _app = Build();
        await _app.StartAsync();
    }

    private async Task StopAsync()
    {
        // Bounded: the client's open streams would otherwise hold the stop for the host's whole shutdown timeout.
        using var cut = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        await _app.StopAsync(cut.Token);
        await _app.DisposeAsync();
    }

    private WebApplication Build()
    {
        var builder = LoopbackServer.CreateBuilder();
        builder.WebHost.UseUrls($"http://127.0.0.1:{_port.ToString(CultureInfo.InvariantCulture)}");
        builder.Services.AddMcpServer(o => o.ServerInfo = new Implementation { Name = "modularchat-test-restartable", Version = "1.0.0" })
            .WithHttpTransport(o => o.Stateless = false)
            .WithTools([.. TestTools.Create(), McpServerTool.Create(async (CancellationToken cancellationToken) =>
            {
                Restarted = Task.Run(RestartAsync, CancellationToken.None);
                await Task.Delay(Timeout.Infinite, cancellationToken); // never answers: the restart cuts the call's connection
                return "never answered";
            }, new McpServerToolCreateOptions { Name = "restart", Description = "Restarts the server while this call is in flight." })]);
        var app = builder.Build();
        app.MapMcp("/mcp");
        return app;
    }

    public async ValueTask DisposeAsync()
    {
        await Restarted;
        await StopAsync();
    }
}

/// <summary>Accepts TCP connections and never says anything: a server that hangs.</summary>
public sealed class SilentServer : IDisposable
{
    private readonly TcpListener _listener;
    private readonly List<TcpClient> _clients = [];
    private readonly CancellationTokenSource _stop = new();

    private SilentServer(TcpListener listener) => _listener = listener;

    /// <summary>When the first connection was accepted (<see cref="Stopwatch.GetTimestamp"/>), if one was.</summary>
    public long? FirstAccepted { get; private set; }

    /// <summary>
    /// When a client first closed a connection it had made (<see cref="Stopwatch.GetTimestamp"/>: it gave up waiting), if
    /// one did. Read (and dropped) is whatever the client sends meanwhile; nothing is ever answered.
    /// </summary>
    public long? FirstClosed { get; private set; }

    /// <summary>Connections accepted so far.</summary>
    public int Accepted
    {
        get
        {
            lock (_clients)
            {
                return _clients.Count;
            }
        }
    }

    public string Url => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/mcp";

    public static SilentServer Start()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var server = new SilentServer(listener);
        _ = server.AcceptAsync();
        return server;
    }

    private async Task AcceptAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                lock (_clients)
                {
                    FirstAccepted ??= Stopwatch.GetTimestamp();
                    _clients.Add(client);
                }

                _ = WatchAsync(client);
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (SocketException)
        {
        }
    }

    /// <summary>Reads what the client sends until it closes the connection (or the server stops), then notes when.</summary>
    private async Task WatchAsync(TcpClient client)
    {
        var buffer = new byte[4096];
        try
        {
            var stream = client.GetStream();
            while (await stream.ReadAsync(buffer, _stop.Token) > 0)
            {
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or SocketException or InvalidOperationException)
        {
        }

        if (!_stop.IsCancellationRequested)
        {
            lock (_clients)
            {
                FirstClosed ??= Stopwatch.GetTimestamp();
            }
        }
    }

    /// <summary>A loopback port with nothing listening (connections are refused).</summary>
    public static string RefusedUrl()
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return $"http://127.0.0.1:{port}/mcp";
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        lock (_clients)
        {
            foreach (var client in _clients)
            {
                client.Dispose();
            }
        }

        _stop.Dispose();
    }
}
