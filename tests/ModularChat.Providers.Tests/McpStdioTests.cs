using System.Diagnostics;
using System.Globalization;
using System.Net;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Providers.Domain;
using ModularChat.Testing.Fakes;

namespace ModularChat.Providers.Tests;

/// <summary>
/// stdio MCP programs that misbehave (the test program's <c>--misbehave</c> modes): what the service reads of them is
/// bounded, they answer within <c>Mcp:ConnectTimeout</c> (3 s in the tests of a program that does not answer), and none
/// outlives its connection or the service.
/// </summary>
[Collection(McpCollection.Name)]
public sealed class McpStdioTests(ProvidersMcpApp app)
{
    [Fact]
    public async Task A_stdio_program_that_writes_a_message_without_end_fails_the_test_naming_the_limit_and_is_stopped()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var (server, pidFile) = await AddStdioServerAsync(client, "flood");

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        // It used to be read into memory until the timeout (gigabytes), and the test reported a timeout.
        Assert.False(result.Success);
        Assert.Contains("longer than 8,388,608 bytes (OutboundNetwork:MaxResponseBytes)", result.Error, StringComparison.Ordinal);
        await GoneAsync(await PidAsync(pidFile));
    }

    [Fact]
    public async Task A_chat_turn_leaves_out_a_stdio_program_that_writes_a_message_without_end_and_stops_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var (_, pidFile) = await AddStdioServerAsync(client, "flood");
        var marker = ChatTests.Marker();
        app.Model.Responder = ChatTests.Answer(marker, _ => FakeReply.Text("fine"), app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{marker} anything?");

        Assert.Equal("fine", turn.Answer.Content);
        Assert.Equal(["add", "echo", "fail"], app.Model.Requests.First(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).ToolNames.Order());
        Assert.Contains(app.Logs.Lines, l => l.Contains("MCP server flood is left out of this chat turn", StringComparison.Ordinal)
            && l.Contains("(OutboundNetwork:MaxResponseBytes)", StringComparison.Ordinal));
        await GoneAsync(await PidAsync(pidFile));
    }

    [Theory]
    [InlineData("hang-initialize")]
    [InlineData("hang-list")]
    public async Task A_stdio_program_that_does_not_answer_fails_the_test_within_the_connect_timeout_and_is_stopped(string how)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var (server, pidFile) = await AddStdioServerAsync(client, how);
        using var _ = app.ShortMcpTimeouts();

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Contains("within 3 s (Mcp:ConnectTimeout)", result.Error, StringComparison.Ordinal);
        // It failed on the deadline, not sooner for another reason: a deadline does not fire early, whatever the machine's
        // load. (How much later the answer came is no verdict: an upper bound of 3.8 s failed at 3.97 s with every test
        // assembly at once on two cores, and the 5.9 s bound it became did not tell one deadline from one per step.)
        Assert.True(result.LatencyMs >= 2_900, $"failed after {result.LatencyMs} ms, before the connect timeout");
        await GoneAsync(await PidAsync(pidFile));
    }

    [Fact]
    public async Task A_chat_turn_lists_its_servers_at_once_within_the_connect_timeout()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await app.StartWithCalculatorAsync(client);
        var (_, initializeHangs) = await AddStdioServerAsync(client, "hang-initialize");
        var (_, listHangs) = await AddStdioServerAsync(client, "hang-list");
        using var _ = app.ShortMcpTimeouts();
        var marker = ChatTests.Marker();
        app.Model.Responder = ChatTests.Answer(marker, _ => FakeReply.Text("fine"), app.Model.Responder);

        var started = Stopwatch.GetTimestamp();
        var startedAt = DateTimeOffset.UtcNow;
        var turn = await client.ChatAsync(conversation, $"{marker} anything?");
        var elapsed = Stopwatch.GetElapsedTime(started);

        Assert.Equal("fine", turn.Answer.Content);
        Assert.Equal(["add", "echo", "fail"], app.Model.Requests.First(r => r.Messages.ToJsonString().Contains(marker, StringComparison.Ordinal)).ToolNames.Order());
        // Both hang: the turn waits Mcp:ConnectTimeout (3 s) once, for both together, not for their sum: each server is left
        // out as its deadline passes, so with one deadline both are at about the same time, with one after the other 3 s
        // apart. (The turn's own time told that apart from one deadline per step only on a quiet machine: the rest of a
        // first turn of a new tenant took about 2 s, and with the assembly's collections at once on two busy cores the
        // turn took 8.5 s, past the 8 s allowed.) Within the fixture's own Mcp:ConnectTimeout (30 s): the short one applied.
        var leftOut = app.Logs.Entries.Where(e => e.At >= startedAt && e.Message.Contains("is left out of this chat turn", StringComparison.Ordinal)).ToList();
        var initializeLeftOut = Assert.Single(leftOut, e => e.Message.StartsWith("MCP server hang-initialize ", StringComparison.Ordinal));
        var listLeftOut = Assert.Single(leftOut, e => e.Message.StartsWith("MCP server hang-list ", StringComparison.Ordinal));
        Assert.Contains("within 3 s (Mcp:ConnectTimeout)", initializeLeftOut.Message, StringComparison.Ordinal);
        Assert.True((initializeLeftOut.At - listLeftOut.At).Duration() < ProvidersApp.ShortMcpTimeout,
            $"left out {(initializeLeftOut.At - listLeftOut.At).Duration().TotalSeconds:0.0} s apart");
        Assert.True(elapsed < TimeSpan.FromSeconds(30), $"the turn took {elapsed.TotalSeconds:0.0} s");
        await GoneAsync(await PidAsync(initializeHangs));
        await GoneAsync(await PidAsync(listHangs));
    }

    [Fact]
    public async Task A_stdio_program_whose_listing_timed_out_is_stopped_before_the_turn_asks_its_model()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var (_, pidFile) = await AddStdioServerAsync(client, "hang-list");
        using var _ = app.ShortMcpTimeouts();
        var marker = ChatTests.Marker();
        bool? runningWhenAsked = null;
        app.Model.Responder = ChatTests.Answer(marker, _ =>
        {
            // The turn goes on (here: asks its model, which may take minutes) without the server whose listing timed out:
            // its program must not run on until the turn ends (nor, if the service stops meanwhile, after it).
            runningWhenAsked = !Gone(int.Parse(File.ReadAllText(pidFile), CultureInfo.InvariantCulture), TimeSpan.FromSeconds(3));
            return FakeReply.Text("fine");
        }, app.Model.Responder);

        var turn = await client.ChatAsync(conversation, $"{marker} anything?");

        Assert.Equal("fine", turn.Answer.Content);
        Assert.False(runningWhenAsked, "the program whose listing timed out still ran while the turn asked its model");
    }

    [Fact]
    public async Task A_stdio_program_still_running_when_the_service_stops_is_stopped_with_it()
    {
        // The Host as its own process, stopped with SIGTERM as a deployment stops it. Its listing waits long (Mcp:ConnectTimeout
        // 2 min), so the program still runs when the host stops; the turn is stopped 1 s after, not 20 (Chat:ShutdownGrace),
        // and the host waits 11 s for the request (the grace and ChatShutdown.AnswerTime), not 30.
        await using var host = await app.StartHostProcessAsync(new Dictionary<string, string>
        {
            ["Mcp__ConnectTimeout"] = "00:02:00",
            ["Chat__ShutdownGrace"] = "00:00:01",
            ["Mcp__Stdio__Enabled"] = "true",
            ["Mcp__Stdio__AllowedCommands__0"] = ProvidersApp.Dotnet,
            ["OutboundNetwork__AllowPrivateNetworks"] = "true",
            ["ASPNETCORE_SHUTDOWNTIMEOUTSECONDS"] = "3",
        });
        using var client = host.Client(app.Token(ModularChatApp.NewUser()));
        await client.AddProviderAsync(app.Model.BaseUrl);
        var conversation = await client.StartConversationAsync();
        var (_, pidFile) = await AddStdioServerAsync(client, "hang-list");
        var turn = client.PostJson($"/api/conversations/{conversation}/chat", new { content = "anything?" });
        var pid = await PidAsync(pidFile);
        Assert.False(Gone(pid, TimeSpan.Zero));

        host.Terminate();

        // It used to be left running, reparented to init.
        await host.WaitForExitAsync(TimeSpan.FromSeconds(60));
        await GoneAsync(pid);
        try
        {
            (await turn).Dispose();
        }
        catch (HttpRequestException)
        {
            // The host dropped the request when it stopped.
        }
    }

    [Fact]
    public async Task A_program_that_prints_its_secrets_to_stderr_and_exits_is_reported_without_any_part_of_them()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        const string token = "ghp_Zq8Rw2Lm5Nx7Kc4Vb1Tj9Hs6Pd3Fa0Ye2Ug"; // from column 490: cut at 500 in the long line
        const string password = "pw-4f7d2c9e1b3a";
        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = "dumps", transport = "stdio", command = ProvidersApp.Dotnet,
            arguments = new[] { ProvidersApp.StdioServerDll, "--misbehave", "dump-environment" },
            secretEnvironment = new Dictionary<string, string> { ["MC_TOKEN"] = token, ["MC_PASSWORD"] = password },
            environment = new Dictionary<string, string> { ["MC_REGION"] = "eu-west" },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);

        var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

        Assert.False(result.Success);
        Assert.Contains("exited (exit code 3)", result.Error, StringComparison.Ordinal);
        Assert.True(result.Error!.Contains("short MC_REGION=eu-west", StringComparison.Ordinal), result.Error); // stderr is reported
        Assert.Contains("short MC_TOKEN=***", result.Error, StringComparison.Ordinal);
        Assert.Contains("config MC_TOKEN=***", result.Error, StringComparison.Ordinal); // the part before the cut, masked too
        Assert.DoesNotContain(token[..6], result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(password[..6], result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(app.Logs.Lines, l => l.Contains(token[..6], StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("missing", "No such file or directory")]
    [InlineData("not executable", "Permission denied")]
    public async Task A_stdio_program_that_cannot_be_started_is_reported_by_its_command_and_why_without_the_services_directory(string how, string why)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var directory = Directory.CreateTempSubdirectory("mc-stdio-");
        var command = Path.Combine(directory.FullName, "server");
        if (how == "not executable")
        {
            await File.WriteAllTextAsync(command, "#!/bin/sh\nexit 0\n"); // without the permission to run
        }

        try
        {
            using var _ = app.AllowStdioCommands(command);
            var server = await (await client.PostJson("/api/mcp-servers", new { name = "broken", transport = "stdio", command }))
                .ReadAs<McpServerDto>(HttpStatusCode.Created);

            var result = await (await client.PostAsync($"/api/mcp-servers/{server.Id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

            // It used to say "An error occurred trying to start process '...' with working directory '<the service's own directory>'".
            Assert.False(result.Success);
            Assert.DoesNotContain(Environment.CurrentDirectory, result.Error, StringComparison.Ordinal);
            Assert.Equal($"The program '{command}' could not be started: {why}.", result.Error);
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task A_server_stored_with_git_settings_in_its_environment_does_not_run_its_program_and_none_can_be_stored()
    {
        // An allowlisted wrapper that runs git (as many do, to find their repository): git takes its settings from
        // GIT_CONFIG_COUNT/KEY_n/VALUE_n too, and core.fsmonitor is a command that 'git status' runs.
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var directory = Directory.CreateTempSubdirectory("mc-git-");
        var ran = Path.Combine(directory.FullName, "ran");
        var script = Path.Combine(directory.FullName, "server");
        await File.WriteAllTextAsync(script,
            "#!/bin/sh\nrepo=$(mktemp -d) && cd \"$repo\" && git init -q && git status >/dev/null 2>&1; cd /; rm -rf \"$repo\"\n" +
            $"exec '{ProvidersApp.Dotnet}' '{ProvidersApp.StdioServerDll}'\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        var environment = new Dictionary<string, string>
        {
            ["GIT_CONFIG_COUNT"] = "1", ["GIT_CONFIG_KEY_0"] = "core.fsmonitor", ["GIT_CONFIG_VALUE_0"] = $"touch '{ran}'; echo",
        };
        try
        {
            using var _ = app.AllowStdioCommands(script);
            // As a version that did not refuse them stored it.
            var id = Guid.CreateVersion7();
            await using (var session = app.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession(user))
            {
                session.Store(new McpServerConnection
                {
                    Id = id, TenantId = user, Name = "git", NormalizedName = "git", Transport = McpTransports.Stdio, Command = script,
                    Environment = new Dictionary<string, string>(environment), CreatedAt = DateTimeOffset.UtcNow,
                });
                await session.SaveChangesAsync();
            }

            var result = await (await client.PostAsync($"/api/mcp-servers/{id}/test", null)).ReadAs<McpTestDto>(HttpStatusCode.OK);

            Assert.False(File.Exists(ran), "git ran the command of core.fsmonitor");
            Assert.False(result.Success);
            Assert.Contains("The environment variable GIT_CONFIG_", result.Error, StringComparison.Ordinal);
            Assert.Contains("is not allowed for stdio programs", result.Error, StringComparison.Ordinal);
            await (await client.PostJson("/api/mcp-servers", new { name = "git-2", transport = "stdio", command = script, environment }))
                .ShouldNameField("environment");
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    /// <summary>Adds a stdio server running the test program in <paramref name="how"/>, and the file it writes its process id to.</summary>
    private static async Task<(McpServerDto Server, string PidFile)> AddStdioServerAsync(HttpClient client, string how)
    {
        var pidFile = Path.Combine(Path.GetTempPath(), $"mcp-{how}-{Guid.NewGuid():N}.pid");
        var server = await (await client.PostJson("/api/mcp-servers", new
        {
            name = how.StartsWith("hang", StringComparison.Ordinal) ? how : "flood", transport = "stdio", command = ProvidersApp.Dotnet,
            arguments = new[] { ProvidersApp.StdioServerDll, "--pid-file", pidFile, "--misbehave", how },
        })).ReadAs<McpServerDto>(HttpStatusCode.Created);
        return (server, pidFile);
    }

    private static async Task<int> PidAsync(string pidFile)
        => int.Parse(await Eventually.Until(
            async () => File.Exists(pidFile) ? await File.ReadAllTextAsync(pidFile) : "",
            text => text.Length > 0, seconds: 60, what: "The program wrote no process id"), CultureInfo.InvariantCulture);

    private static Task GoneAsync(int pid)
        => Eventually.Until(() => Task.FromResult(Gone(pid, TimeSpan.Zero)), gone => gone, seconds: 10, what: $"Process {pid} still runs");

    /// <summary>Whether process <paramref name="pid"/> has ended (a zombie has), waiting up to <paramref name="wait"/> for it to.</summary>
    private static bool Gone(int pid, TimeSpan wait)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(wait.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            var stat = $"/proc/{pid}/stat";
            var gone = !File.Exists(stat) || TryRead(stat) is not { } text || text[(text.LastIndexOf(')') + 2)..].StartsWith('Z');
            if (gone || Stopwatch.GetTimestamp() > deadline)
            {
                return gone;
            }

            Thread.Sleep(50);
        }
    }

    private static string? TryRead(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return null;
        }
    }
}
