using ModelContextProtocol.Server;

namespace ModularChat.McpTestServer;

/// <summary>The tools the test MCP servers offer (the stdio program and the HTTP servers the tests start).</summary>
public static class TestTools
{
    /// <param name="environment">Also offer <c>get_env</c> (the stdio program: to see which environment it was given).</param>
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
        }

        return tools;
    }
}
