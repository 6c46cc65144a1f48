using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Claims;
using System.Text;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace ModularChat.Benchmarks;

/// <summary>
/// What the benchmark runs against: the PostgreSQL that ./build.sh provides (ConnectionStrings__Postgres)
/// and a ModularChat host, reused when one answers at MODULARCHAT_URL (default http://localhost:5080),
/// otherwise started here and stopped at the end.
/// </summary>
internal sealed class BenchEnvironment : IAsyncDisposable
{
    private Process? _host;

    public required string PostgresConnectionString { get; set; }

    public string? RedisConnectionString { get; init; }

    public required string SigningKey { get; init; }

    public Uri BaseAddress { get; private set; } = null!;

    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "ModularChat.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Run the benchmark from inside the ModularChat repository (./build.sh bench).");
    }

    /// <summary>
    /// Takes the repository's benchmark lock (an exclusive lock on <c>.local/bench.lock</c>, released when the process
    /// ends however it ends), or null when another run holds it.
    /// </summary>
    public static FileStream? TryLockRun()
    {
        var folder = Directory.CreateDirectory(Path.Combine(RepositoryRoot(), ".local"));
        try
        {
            return new FileStream(Path.Combine(folder.FullName, "bench.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException)
        {
            return null;
        }
    }

    public static BenchEnvironment FromEnvironment() => new()
    {
        PostgresConnectionString = Environment.GetEnvironmentVariable("ConnectionStrings__Postgres")
            ?? throw new InvalidOperationException("ConnectionStrings__Postgres is not set: run the benchmark through ./build.sh bench."),
        RedisConnectionString = Environment.GetEnvironmentVariable("ConnectionStrings__Redis"),
        SigningKey = Environment.GetEnvironmentVariable("Auth__SigningKey")
            ?? throw new InvalidOperationException("Auth__SigningKey is not set: run the benchmark through ./build.sh bench."),
    };

    /// <summary>Uses a running host when one answers, else starts one from the Release build.</summary>
    public async Task StartAsync(IDictionary<string, string>? hostSettings = null)
    {
        var existing = new Uri(Environment.GetEnvironmentVariable("MODULARCHAT_URL") ?? "http://localhost:5080");
        if (hostSettings is null && await IsReadyAsync(existing))
        {
            Console.Error.WriteLine($"[bench] using the ModularChat host already running at {existing}");
            BaseAddress = existing;
            return;
        }

        var dll = Environment.GetEnvironmentVariable("BENCH_HOST_DLL")
            ?? Path.Combine(RepositoryRoot(), "src", "Host", "bin", "Release", "net10.0", "ModularChat.Host.dll");
        if (!File.Exists(dll))
        {
            throw new InvalidOperationException($"{dll} is missing: ./build.sh bench builds it first.");
        }

        // A host of our own works in a database of its own, created fresh for every run, so figures do not
        // depend on what earlier runs (or a developer) left behind.
        PostgresConnectionString = await FreshDatabaseAsync(PostgresConnectionString, "_bench");
        BaseAddress = new Uri($"http://127.0.0.1:{FreePort()}");
        var start = new ProcessStartInfo("dotnet", [dll])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = Path.GetDirectoryName(dll)!,
        };
        start.Environment["ASPNETCORE_URLS"] = BaseAddress.ToString();
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        start.Environment["ConnectionStrings__Postgres"] = PostgresConnectionString;
        start.Environment["ConnectionStrings__Redis"] = RedisConnectionString ?? "";
        start.Environment["Auth__SigningKey"] = SigningKey;
        start.Environment["Logging__LogLevel__Default"] = "Warning";
        foreach (var (key, value) in hostSettings ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        Console.Error.WriteLine($"[bench] starting ModularChat on {BaseAddress}");
        _host = Process.Start(start) ?? throw new InvalidOperationException("Could not start the host.");
        _host.OutputDataReceived += (_, _) => { };
        _host.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                Console.Error.WriteLine($"[host] {e.Data}");
            }
        };
        _host.BeginOutputReadLine();
        _host.BeginErrorReadLine();

        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (!await IsReadyAsync(BaseAddress))
        {
            if (_host.HasExited || DateTime.UtcNow > deadline)
            {
                throw new InvalidOperationException("The host did not become ready.");
            }

            await Task.Delay(250);
        }
    }

    public async Task StopHostAsync()
    {
        if (_host is { HasExited: false })
        {
            Console.Error.WriteLine("[bench] stopping the host it started");
            _host.Kill(entireProcessTree: true);
            await _host.WaitForExitAsync();
        }

        _host?.Dispose();
        _host = null;
    }

    /// <summary>A client with a signed token for <paramref name="subject"/> (its own tenant).</summary>
    public HttpClient Client(string subject, int connections = 64)
    {
        var handler = new SocketsHttpHandler { MaxConnectionsPerServer = connections, PooledConnectionLifetime = TimeSpan.FromMinutes(10) };
        var client = new HttpClient(handler) { BaseAddress = BaseAddress, Timeout = TimeSpan.FromMinutes(5) };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", Token(subject));
        return client;
    }

    private string Token(string subject)
    {
        var buffer = new byte[SigningKey.Length];
        var key = Convert.TryFromBase64String(SigningKey, buffer, out var written) && written >= 32 ? buffer[..written] : Encoding.UTF8.GetBytes(SigningKey);
        return new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = "modularchat-dev",
            Audience = "modularchat",
            Subject = new ClaimsIdentity([new Claim("sub", subject), new Claim("role", "admin")]),
            Expires = DateTime.UtcNow.AddHours(4),
            SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(key), SecurityAlgorithms.HmacSha256),
        });
    }

    private static async Task<bool> IsReadyAsync(Uri baseAddress)
    {
        try
        {
            using var http = new HttpClient { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(2) };
            return (await http.GetAsync("/health/ready")).StatusCode == HttpStatusCode.OK;
        }
        catch (HttpRequestException)
        {
            return false;
        }
        catch (TaskCanceledException)
        {
            return false;
        }
    }

    private static async Task<string> FreshDatabaseAsync(string connectionString, string suffix)
    {
        var target = new Npgsql.NpgsqlConnectionStringBuilder(connectionString);
        target.Database = (target.Database ?? "modularchat") + suffix;
        var admin = new Npgsql.NpgsqlConnectionStringBuilder(connectionString) { Database = "postgres", Pooling = false };
        await using var connection = new Npgsql.NpgsqlConnection(admin.ConnectionString);
        await connection.OpenAsync();
        await using (var drop = new Npgsql.NpgsqlCommand($"drop database if exists \"{target.Database}\" with (force)", connection))
        {
            await drop.ExecuteNonQueryAsync();
        }

        await using (var create = new Npgsql.NpgsqlCommand($"create database \"{target.Database}\"", connection))
        {
            await create.ExecuteNonQueryAsync();
        }

        return target.ConnectionString;
    }

    /// <summary>
    /// Refreshes PostgreSQL's statistics after the warm-up, as autovacuum keeps them on a database that has been running
    /// for a while (pgbench vacuums before it measures, too). The benchmark's database is created for the run: without
    /// this, the planner measured here is one that still believes the tables it just filled are empty, or that the
    /// benchmark's tenant, new to the statistics, holds a handful of rows.
    /// </summary>
    public async Task AnalyzeAsync()
    {
        await using var dataSource = Npgsql.NpgsqlDataSource.Create(PostgresConnectionString);
        await using var analyze = dataSource.CreateCommand("analyze");
        analyze.CommandTimeout = 120;
        await analyze.ExecuteNonQueryAsync();
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync() => await StopHostAsync();
}
