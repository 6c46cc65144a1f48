using System.Diagnostics;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using Alba;
using Xunit;
using JasperFx.CommandLine;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Host.Auth;
using Npgsql;
using Wolverine;
using Wolverine.Runtime.Agents;

namespace ModularChat.Testing;

/// <summary>
/// One real ModularChat host (Alba over the Host's Program) on real PostgreSQL and Redis,
/// shared by a test collection. Tests isolate themselves by acting as their own tenant.
/// </summary>
public class ModularChatApp : IAsyncLifetime
{
    private readonly string _databaseName;

    /// <param name="databaseName">
    /// Database of this test assembly (default: derived from the fixture's assembly, prefixed by
    /// MODULARCHAT_TEST_DB_PREFIX so several checkouts can share one PostgreSQL).
    /// </param>
    public ModularChatApp(string? databaseName = null)
        => _databaseName = databaseName ?? TestDatabase(GetType().Assembly.GetName().Name!.Replace("ModularChat.", "", StringComparison.Ordinal)
            .Replace(".", "_", StringComparison.Ordinal).ToLowerInvariant());

    /// <summary><paramref name="name"/> with this checkout's test database prefix (MODULARCHAT_TEST_DB_PREFIX, else <c>mc_</c>).</summary>
    public static string TestDatabase(string name) => (Environment.GetEnvironmentVariable("MODULARCHAT_TEST_DB_PREFIX") ?? "mc_") + name;

    public IAlbaHost Host { get; private set; } = null!;

    public string PostgresConnectionString { get; private set; } = "";

    public string RedisConnectionString { get; private set; } = "";

    /// <summary>Envelopes not yet handled (incoming, running or scheduled) whose message names one of the conversations.</summary>
    /// <param name="database">The database whose inbox is read (this fixture's unless given).</param>
    public async Task<long> PendingEnvelopesAbout(IEnumerable<Guid> ids, string? database = null)
    {
        await using var connection = new NpgsqlConnection(database ?? PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "select count(*) from modularchat.wolverine_incoming_envelopes where status <> 'Handled' and exists (select 1 from unnest(@ids) i where position(i in body) > 0)",
            connection);
        command.Parameters.AddWithValue("ids", ids.Select(id => System.Text.Encoding.UTF8.GetBytes(id.ToString())).ToArray());
        return (long)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>The auth settings the host runs with (its signing key is random per fixture).</summary>
    public AuthOptions Auth { get; } = new() { SigningKey = Convert.ToBase64String(RandomNumberGenerator.GetBytes(48)) };

    /// <summary>
    /// The Data Protection master key the host runs with (the service refuses to start without one outside Development).
    /// Fixed per test database so the key ring stored there stays readable by the next run.
    /// </summary>
    public string MasterKey => Convert.ToBase64String(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes("modularchat-test-master-key:" + _databaseName)));

    /// <summary>Extra configuration for the host, applied over appsettings.json.</summary>
    protected virtual IDictionary<string, string?> Settings => new Dictionary<string, string?>();

    /// <summary>
    /// Whether the first host runs the asynchronous projections (Marten's daemon: search indexing, the high-water mark);
    /// hosts started after it never do.
    /// </summary>
    protected virtual bool RunsAsyncProjections => true;

    /// <summary>Extra service registrations (test doubles of external systems only, never of our own infrastructure).</summary>
    protected virtual void ConfigureServices(IServiceCollection services)
    {
    }

    /// <summary>
    /// Whether <see cref="InitializeAsync"/> starts a host in this process; not for <see cref="ProcessesApp"/>, whose tests
    /// never call one (it would only poll the database beside them). <see cref="Host"/> stays null then.
    /// </summary>
    protected virtual bool StartsHost => true;

    public virtual async Task InitializeAsync()
    {
        PostgresConnectionString = await TestInfrastructure.PostgresAsync(_databaseName);
        RedisConnectionString = await TestInfrastructure.RedisAsync();
        if (StartsHost)
        {
            Host = await StartHostAsync();
        }
    }

    /// <summary>
    /// Starts another host on the same database and Redis (another node of the same deployment). Hosts run Wolverine in
    /// solo mode (no leader election, so they start fast); only the first one runs the asynchronous projections, as
    /// Wolverine would assign them to one node of a cluster.
    /// </summary>
    /// <remarks>
    /// A start that fails stops and disposes what it had started before it throws (the host is never handed back, so nothing
    /// else could): a node left half-started would go on claiming the shared inbox's envelopes in solo mode for the rest of
    /// the test run.
    /// </remarks>
    /// <param name="overrides">Settings for this host only, over the fixture's; a null value leaves the setting out.</param>
    /// <param name="services">Extra registrations for this host only, after the fixture's own.</param>
    public async Task<IAlbaHost> StartHostAsync(IDictionary<string, string?>? overrides = null, Action<IServiceCollection>? services = null)
    {
        // A node starting in solo mode releases the ownership of every envelope in the inbox in one statement (Wolverine's
        // ReleaseAllOwnershipAsync), which can deadlock with a running node marking its envelopes handled: the start then
        // fails (seen once in a full run). Started again, it goes through.
        for (var attempt = 1; ; attempt++)
        {
            var start = new StartAttempt();
            try
            {
                return await BuildHostAsync(overrides, collection =>
                {
                    start.Register(collection);
                    services?.Invoke(collection);
                });
            }
            catch (Exception e)
            {
                try
                {
                    await start.UndoAsync();
                }
                catch (Exception undo)
                {
                    throw new AggregateException("The host failed to start, and stopping what it had started failed too.", e, undo);
                }

                if (attempt >= 3 || !Sql.IsDeadlock(e))
                {
                    throw;
                }
            }
        }
    }

    private Task<IAlbaHost> BuildHostAsync(IDictionary<string, string?>? overrides, Action<IServiceCollection> extra)
    {
        var runsProjections = Host is null && RunsAsyncProjections;
        JasperFxEnvironment.AutoStartHost = true;
        var settings = new Dictionary<string, string?>
        {
            ["ConnectionStrings:Postgres"] = PostgresConnectionString,
            ["ConnectionStrings:Redis"] = RedisConnectionString,
            ["Auth:SigningKey"] = Auth.SigningKey,
            ["Auth:Issuer"] = Auth.Issuer,
            ["Auth:Audience"] = Auth.Audience,
            ["DataProtection:MasterKey"] = MasterKey,
        };
        foreach (var (key, value) in Settings)
        {
            settings[key] = value;
        }

        foreach (var (key, value) in overrides ?? new Dictionary<string, string?>())
        {
            if (value is null)
            {
                settings.Remove(key); // left out: the host's own appsettings.json and defaults apply
            }
            else
            {
                settings[key] = value;
            }
        }

        return AlbaHost.For<Program>(builder =>
        {
            builder.UseEnvironment("Testing");
            builder.ConfigureLogging(logging => TestLogs.AddTo(logging, GetType().Assembly.GetName().Name!));
            foreach (var (key, value) in settings)
            {
                builder.UseSetting(key, value);
            }

            builder.ConfigureServices(services =>
            {
                services.RunWolverineInSoloMode();
                services.DisableAllExternalWolverineTransports();
                if (!runsProjections)
                {
                    // The Marten event subscription agents (projections) are registered by Wolverine.Marten.
                    foreach (var family in services.Where(d => d.ServiceType == typeof(IAgentFamily)
                                 && d.ImplementationFactory?.Method.DeclaringType?.Namespace == "Wolverine.Marten").ToList())
                    {
                        services.Remove(family);
                    }
                }

                ConfigureServices(services);
                extra(services);
            });
        });
    }

    /// <summary>A valid token for <paramref name="subject"/> (tenant = subject unless given).</summary>
    public string Token(string subject, string? tenant = null, params string[] roles)
        => DevelopmentTokens.Create(Auth, subject, tenant, roles);

    /// <summary>An HttpClient on the in-memory server, authenticated as <paramref name="subject"/>.</summary>
    public HttpClient Client(string subject, string? tenant = null, params string[] roles) => Client(Host, subject, tenant, roles);

    /// <summary>An HttpClient on <paramref name="node"/> (a host of <see cref="StartHostAsync"/>), authenticated as <paramref name="subject"/>.</summary>
    public HttpClient Client(IAlbaHost node, string subject, string? tenant = null, params string[] roles)
    {
        var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token(subject, tenant, roles));
        return client;
    }

    /// <summary>
    /// Runs the Host's command line (the same build the tests use, as an operator would: <c>dotnet ModularChat.Host.dll
    /// &lt;command&gt;</c>) against this fixture's database and Redis, with <paramref name="environment"/> on top.
    /// </summary>
    public async Task<(int ExitCode, string Output)> RunHostCommandAsync(IDictionary<string, string>? environment, params string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "ModularChat.Host.dll");
        var start = new ProcessStartInfo("dotnet", [dll, .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        start.Environment["ConnectionStrings__Postgres"] = PostgresConnectionString;
        start.Environment["ConnectionStrings__Redis"] = RedisConnectionString;
        start.Environment["Auth__SigningKey"] = Auth.SigningKey;
        start.Environment["DataProtection__MasterKey"] = MasterKey;
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await output + await error);
    }

    /// <summary>
    /// Starts the Host as its own process on a free loopback port (the same build the tests use, with Kestrel, as an operator
    /// runs it) against this fixture's Redis, with <paramref name="environment"/> on top, and waits until it answers. For
    /// what an in-memory test server does not do the same way, such as draining requests when the process is told to stop.
    /// <para>
    /// It runs on a database of its own (<see cref="ProcessDatabaseAsync"/>), not this fixture's: it is a node of its own
    /// cluster (the fixture's hosts run in solo mode), so it runs the asynchronous projections too, and two daemons on one
    /// database make one of them fail with ProgressionProgressOutOfOrderException, which Wolverine does not restart: the
    /// fixture's search indexing stopped for the rest of the run, and every later test waiting for search or for retention
    /// (which waits for the projections) failed.
    /// </para>
    /// </summary>
    /// <param name="workingDirectory">Where the process starts (the build's directory unless given).</param>
    /// <param name="database">The connection string of the database it runs on (<see cref="ProcessDatabaseAsync"/> unless given).</param>
    public async Task<HostProcess> StartHostProcessAsync(IDictionary<string, string>? environment = null, string? workingDirectory = null, string? database = null)
    {
        database ??= await ProcessDatabaseAsync();
        var port = HostProcess.FreePort();
        var start = new ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "ModularChat.Host.dll")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workingDirectory ?? AppContext.BaseDirectory,
        };
        start.Environment["ASPNETCORE_URLS"] = $"http://127.0.0.1:{port}";
        start.Environment["ConnectionStrings__Postgres"] = database;
        start.Environment["ConnectionStrings__Redis"] = RedisConnectionString;
        start.Environment["Auth__SigningKey"] = Auth.SigningKey;
        start.Environment["Auth__Issuer"] = Auth.Issuer;
        start.Environment["Auth__Audience"] = Auth.Audience;
        start.Environment["DataProtection__MasterKey"] = MasterKey;
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        var host = new HostProcess(Process.Start(start)!, new Uri($"http://127.0.0.1:{port}"));
        try
        {
            await host.WaitUntilLiveAsync(TimeSpan.FromMinutes(3)); // 2 min ran out once, under heavy load
            return host;
        }
        catch
        {
            await host.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// The database the host processes of <see cref="StartHostProcessAsync"/> run on (this fixture's database name with
    /// <c>_processes</c>, created if needed). A test reads what a process stored through a node of its own on it:
    /// <c>StartHostAsync</c> with <c>ConnectionStrings:Postgres</c> set to it (a node after the first runs no projections).
    /// </summary>
    public Task<string> ProcessDatabaseAsync() => DatabaseOfItsOwnAsync("processes");

    /// <summary>
    /// A database beside this fixture's (its name with <c>_</c> and <paramref name="suffix"/>, created if needed), for a node
    /// that must be alone on its database: the fixture's hosts run in solo mode, so each of them claims what is left in the
    /// shared inbox (a replayed dead letter, for one) and a test cannot tell which node handles it.
    /// </summary>
    public Task<string> DatabaseOfItsOwnAsync(string suffix) => TestInfrastructure.PostgresAsync($"{_databaseName}_{suffix}");

    /// <summary>As <see cref="DatabaseOfItsOwnAsync"/>, emptied first of what an earlier run left there.</summary>
    public Task<string> EmptyDatabaseOfItsOwnAsync(string suffix) => TestInfrastructure.EmptyPostgresAsync($"{_databaseName}_{suffix}");

    /// <summary>A fresh subject (and so a fresh tenant) for one test.</summary>
    public static string NewUser(string prefix = "user") => $"{prefix}-{Guid.NewGuid():N}";

    public virtual async Task DisposeAsync()
    {
        if (Host is not null)
        {
            await Host.DisposeAsync();
        }
    }
}
