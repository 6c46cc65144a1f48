using ModelContextProtocol.Server;

namespace ModularChat.McpTestServer;

/// <summary>The tools the test MCP servers offer (the stdio program and the HTTP servers the tests start).</summary>
public static class TestTools
{
    /// <param name="environment">
    /// Also offer <c>get_env</c> and <c>get_cwd</c> (the stdio program: to see which environment and directory it was
    /// given), and <c>crash</c>, which ends the program at once without answering, as a server that crashes does.
    /// </param>
    public static IReadOnlyList<McpServerTool> Create(bool environment = false)
    {
        List<McpServerTool> tools =
        [
            McpServerTool.Create((int a, int b) => a + b, new McpServerToolCreateOptions { Name = "add", Description = "Adds two integers and returns the sum." }),
            McpServerTool.Create((string text) => text, new McpServerToolCreateOptions { Name = "echo", Description = "Returns the text it is given." }),
            McpServerTool.Create(string () => throw new InvalidOperationException("the tool failed on purpose"),
                new McpServerToolCreateOptions { Name = "fail", Description = "Always fails.\0" /* a NUL: PostgreSQL cannot store it */ }),
        ];
        if (environment)
        {
            tools.Add(McpServerTool.Create((string name) => Environment.GetEnvironmentVariable(name) ?? "(unset)",
                new McpServerToolCreateOptions { Name = "get_env", Description = "Returns the value of an environment variable of the server process." }));
            tools.Add(McpServerTool.Create(string () => $"{Environment.CurrentDirectory} ({Directory.EnumerateFileSystemEntries(Environment.CurrentDirectory).Count()} entries)",
                new McpServerToolCreateOptions { Name = "get_cwd", Description = "Returns the server process's working directory and how many entries it holds." }));
            tools.Add(McpServerTool.Create(string () =>
                {
                    System.Diagnostics.Process.GetCurrentProcess().Kill();
                    return "never answered";
                },
                new McpServerToolCreateOptions { Name = "crash", Description = "Ends the server process at once, without answering." }));
        }

        return tools;
    }
}
