using ModelContextProtocol.Protocol;
using ModelContextProtocol.Server;
using ModularChat.McpTestServer;

// A small MCP server over stdio for the tests: stdout carries the protocol, so nothing else is written there.
var options = new McpServerOptions
{
    ServerInfo = new Implementation { Name = "modularchat-test-stdio", Version = "1.0.0" },
    ToolCollection = [.. TestTools.Create(environment: true)],
};
await using var server = McpServer.Create(new StdioServerTransport("modularchat-test-stdio"), options);
await server.RunAsync();
