using ModelContextProtocol.Protocol;
using ModelContextProtocol.Server;
using ModularChat.McpTestServer;

// A small MCP server over stdio for the tests: stdout carries the protocol, so nothing else is written there.
//   --pid-file <path>   writes the process id there first (a test then checks the process is gone when it should be)
//   --misbehave <how>   instead of serving: flood (after reading initialize, writes bytes without a newline, endlessly),
//                       hang-initialize (never answers initialize), hang-list (answers initialize, never tools/list),
//                       dump-environment (prints its MC_ variables to stderr, a ..._TOKEN one in a long line too, and exits 3)
var pidFile = Option("--pid-file");
if (pidFile is not null)
{
    await File.WriteAllTextAsync(pidFile, Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
}

if (Option("--misbehave") is { } how)
{
    await Misbehaviour.RunAsync(how);
    return;
}

var options = new McpServerOptions
{
    ServerInfo = new Implementation { Name = "modularchat-test-stdio", Version = "1.0.0" },
    ToolCollection = [.. TestTools.Create(environment: true)],
};
await using var server = McpServer.Create(new StdioServerTransport("modularchat-test-stdio"), options);
await server.RunAsync();

string? Option(string name)
{
    var at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length ? args[at + 1] : null;
}
