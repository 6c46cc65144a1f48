using System.Text.Json.Nodes;

namespace ModularChat.McpTestServer;

/// <summary>
/// The stdio program as a server that a tenant might run and that the service must survive: speaks JSON-RPC by hand over
/// stdin/stdout, so that it can do what the SDK's server never would.
/// </summary>
internal static class Misbehaviour
{
    public static async Task RunAsync(string how)
    {
        if (how == "dump-environment")
        {
            // A program that fails at start and prints its settings to stderr, the secret ones too; a token also in a long
            // line that runs past what the service keeps of a line (500 characters), its value from column 490 on.
            foreach (var (name, value) in Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
                         .Select(e => ((string)e.Key, (string?)e.Value)).Where(e => e.Item1.StartsWith("MC_", StringComparison.Ordinal)).Order())
            {
                await Console.Error.WriteLineAsync($"short {name}={value}");
                if (name.EndsWith("_TOKEN", StringComparison.Ordinal))
                {
                    var prefix = $"config {name}=";
                    await Console.Error.WriteLineAsync(new string('.', 490 - prefix.Length) + prefix + value);
                }
            }

            Environment.Exit(3);
        }

        using var input = new StreamReader(Console.OpenStandardInput());
        await using var output = Console.OpenStandardOutput();
        while (await input.ReadLineAsync() is { } line)
        {
            var request = JsonNode.Parse(line);
            var method = request?["method"]?.GetValue<string>();
            var id = request?["id"]?.DeepClone();
            switch (how, method)
            {
                case ("flood", "initialize"):
                    // A message that never ends: 64 KiB at a time, no newline, until the reader gives up (or this is killed).
                    var chunk = new byte[64 * 1024];
                    Array.Fill(chunk, (byte)'x');
                    chunk[0] = (byte)'{';
                    while (true)
                    {
                        await output.WriteAsync(chunk);
                        chunk[0] = (byte)'x';
                    }

                case ("hang-initialize", _):
                case ("hang-list", "tools/list"):
                    break; // read on, answer never

                case (_, "initialize"):
                    await WriteAsync(output, new JsonObject
                    {
                        ["jsonrpc"] = "2.0",
                        ["id"] = id,
                        ["result"] = new JsonObject
                        {
                            ["protocolVersion"] = request?["params"]?["protocolVersion"]?.DeepClone(),
                            ["capabilities"] = new JsonObject { ["tools"] = new JsonObject() },
                            ["serverInfo"] = new JsonObject { ["name"] = "modularchat-test-stdio-" + how, ["version"] = "0.1" },
                        },
                    });
                    break;

                default:
                    if (id is not null)
                    {
                        await WriteAsync(output, new JsonObject
                        {
                            ["jsonrpc"] = "2.0", ["id"] = id, ["error"] = new JsonObject { ["code"] = -32601, ["message"] = "Method not found" },
                        });
                    }

                    break;
            }
        }
    }

    private static async Task WriteAsync(Stream output, JsonObject message)
    {
        await output.WriteAsync(System.Text.Encoding.UTF8.GetBytes(message.ToJsonString() + "\n"));
        await output.FlushAsync();
    }
}
