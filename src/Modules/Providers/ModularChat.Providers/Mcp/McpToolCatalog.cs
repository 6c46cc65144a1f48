using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using ModelContextProtocol;
using ModelContextProtocol.Client;
using ModelContextProtocol.Protocol;
using ModularChat.BuildingBlocks.Security;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Providers.Domain;

namespace ModularChat.Providers.Mcp;

/// <summary>A server's answer to tools/list was an error or not a list of tools.</summary>
internal sealed class McpListException(string message) : Exception(message);

/// <summary>A server's tools as they are kept, and a sentence for each thing left out of them.</summary>
internal sealed record McpToolListing(IReadOnlyList<McpToolInfo> Tools, IReadOnlyList<string> Warnings);

/// <summary>
/// Lists a server's tools page by page and keeps those a model can be offered. A server's list is its own to get
/// wrong: an entry without a usable name or an object schema, a name that cannot be stored, a description or schema
/// too large for a model request, or thousands of tools. Each such entry is left out with a warning instead of failing
/// the whole server (the SDK's own listing refuses the list at the first bad schema), and the list is bounded: at most
/// <see cref="McpOptions.MaxToolsPerServer"/> tools from at most <see cref="McpOptions.MaxToolListPages"/> pages. A
/// description or schema that repeats the server's own secrets (a description that shows its Authorization header as an
/// example) is kept without them: it is stored, answered by the API and sent to the model on every turn. A tool whose
/// name holds one of them is left out (the name is what the server is called with).
/// </summary>
internal static partial class McpToolCatalog
{
    /// <summary>The MCP specification's longest tool name.</summary>
    public const int MaxNameLength = 128;

    private const int MaxWarnings = 20;

    /// <exception cref="McpListException">The server answered tools/list with an error or with something else than a list.</exception>
    /// <param name="secretValues">The server's secret values (<see cref="McpConnector.SecretValues"/>), masked in the descriptions and schemas kept.</param>
    public static async Task<McpToolListing> ListAsync(McpClient client, McpOptions options, IReadOnlyList<string> secretValues, CancellationToken cancellationToken)
    {
        try
        {
            return await ListPagesAsync(client, options, secretValues, cancellationToken);
        }
        catch (McpException e)
        {
            throw new McpListException(McpConnector.ServerWords(e));
        }
    }

    private static async Task<McpToolListing> ListPagesAsync(McpClient client, McpOptions options, IReadOnlyList<string> secretValues, CancellationToken cancellationToken)
    {
        var listing = new Listing(options, secretValues);
        string? cursor = null;
        var cursors = new HashSet<string>(StringComparer.Ordinal);
        for (var page = 1; ; page++)
        {
            var response = await client.SendRequestAsync(new JsonRpcRequest
            {
                Method = RequestMethods.ToolsList,
                Params = cursor is null ? new JsonObject() : new JsonObject { ["cursor"] = cursor },
            }, cancellationToken);
            if (response.Result is not JsonObject result || result["tools"] is not JsonArray tools)
            {
                throw new McpListException("its answer has no 'tools' list.");
            }

            foreach (var entry in tools)
            {
                if (listing.Full)
                {
                    break;
                }

                listing.Add(entry);
            }

            cursor = result["nextCursor"] is JsonValue next && next.TryGetValue<string>(out var text) && text.Length > 0 ? text : null;
            if (listing.Full)
            {
                if (cursor is not null || tools.Count > listing.TakenFromLastPage)
                {
                    listing.Warn($"The server lists more than {options.MaxToolsPerServer} tools; the first {options.MaxToolsPerServer} are kept (Mcp:MaxToolsPerServer).");
                }

                break;
            }

            if (cursor is null)
            {
                break;
            }

            if (!cursors.Add(cursor))
            {
                listing.Warn($"The server's tool list came back to an earlier page (cursor '{Shorten(cursor, 40)}'); listing stopped there.");
                break;
            }

            if (page == options.MaxToolListPages)
            {
                listing.Warn($"The server's tool list has more than {options.MaxToolListPages} pages; the tools of the first {options.MaxToolListPages} are kept (Mcp:MaxToolListPages).");
                break;
            }

            listing.NextPage();
        }

        return listing.Result();
    }

    /// <summary>A server's text as a warning quotes it: short, and with no control character to garble a log line or a terminal.</summary>
    private static string Shorten(string text, int max)
    {
        var shown = string.Concat(text.Take(max).Select(c => char.IsControl(c) ? '?' : c));
        return text.Length <= max ? shown : shown + "...";
    }

    /// <summary>
    /// <paramref name="tool"/> without <paramref name="secretValues"/> in its description and schema (a list stored before
    /// lists were scrubbed, as the model is offered it). A schema that would not be JSON without them is replaced by an
    /// object schema without properties. Null for a tool whose name holds one of them (<see cref="HoldsSecret"/>).
    /// </summary>
    private static McpToolInfo? Scrubbed(McpToolInfo tool, IReadOnlyList<string> secretValues) => HoldsSecret(tool.Name, secretValues) ? null : new()
    {
        Name = tool.Name,
        Description = tool.Description is null ? null : Redaction.ScrubSecrets(tool.Description, secretValues),
        InputSchema = ScrubbedSchema(tool.InputSchema, secretValues) ?? """{"type":"object"}""",
    };

    /// <summary>
    /// <paramref name="server"/>'s stored tool list as it is read, answered by <c>GET /api/mcp-servers</c> or offered to the
    /// model: each tool <see cref="Scrubbed"/>. A list stored before tool names were looked at may hold a tool whose name
    /// holds one of <paramref name="secretValues"/> until the server's next test stores its list again: it is left out
    /// here too, with a warning that does not quote it.
    /// </summary>
    public static List<McpToolInfo> Readable(McpServerConnection server, IReadOnlyList<McpToolInfo> tools, IReadOnlyList<string> secretValues, ILogger logger)
    {
        var readable = tools.Select(t => Scrubbed(t, secretValues)).OfType<McpToolInfo>().ToList();
        if (readable.Count < tools.Count)
        {
            LogStoredSecretNames(logger, server.Name, server.Id, tools.Count - readable.Count);
        }

        return readable;
    }

    /// <summary>
    /// Whether a tool's <paramref name="name"/> holds one of the server's <paramref name="secretValues"/>. Such a tool is left
    /// out rather than kept under a masked name: the name is what the server must be called with, and it would be stored,
    /// answered by the API, offered to the model, and stored with every call of it.
    /// </summary>
    private static bool HoldsSecret(string name, IReadOnlyList<string> secretValues) => Redaction.ScrubSecrets(name, secretValues) != name;

    /// <summary>
    /// A schema's JSON text without the secrets it repeats (in a property's description, a default, an example), or null when
    /// masking them left no JSON object: the secrets are masked as JSON writes them inside a string, so a secret that spans a
    /// string's end is the only way to get there.
    /// </summary>
    private static string? ScrubbedSchema(string schema, IReadOnlyList<string> secretValues)
    {
        var scrubbed = Redaction.ScrubSecrets(schema, secretValues);
        if (scrubbed == schema)
        {
            return schema;
        }

        try
        {
            return JsonNode.Parse(scrubbed) is JsonObject ? scrubbed : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private sealed class Listing(McpOptions options, IReadOnlyList<string> secretValues)
    {
        private readonly List<McpToolInfo> _tools = [];
        private readonly List<string> _warnings = [];
        private readonly HashSet<string> _names = new(StringComparer.Ordinal);
        private int _unsaid;

        public bool Full => _tools.Count >= options.MaxToolsPerServer;

        public int TakenFromLastPage { get; private set; }

        public void NextPage() => TakenFromLastPage = 0;

        public void Add(JsonNode? entry)
        {
            TakenFromLastPage++;
            if (entry is not JsonObject tool)
            {
                Warn("An entry of the tool list is not an object; it is left out.");
                return;
            }

            var name = tool["name"] is JsonValue n && n.TryGetValue<string>(out var s) ? s : null;
            if (string.IsNullOrWhiteSpace(name))
            {
                Warn("A tool without a name is left out.");
                return;
            }

            if (HoldsSecret(name, secretValues))
            {
                // Not quoted: the warning is logged and answered by a test.
                Warn("A tool is left out: its name holds one of the server's secrets.");
                return;
            }

            var shown = Shorten(name, 60);
            if (name.Any(char.IsControl) || name.Length > MaxNameLength)
            {
                Warn(name.Length > MaxNameLength
                    ? $"The tool '{shown}' is left out: its name is longer than {MaxNameLength} characters."
                    : $"The tool '{shown}' is left out: its name contains control characters.");
                return;
            }

            if (!_names.Add(name))
            {
                Warn($"The tool '{shown}' is listed twice; the first is kept.");
                return;
            }

            var schema = tool["inputSchema"] ?? new JsonObject { ["type"] = "object" };
            if (schema is not JsonObject schemaObject || schemaObject["type"] is not JsonValue type
                || !type.TryGetValue<string>(out var typeName) || typeName != "object"
                || schemaObject["properties"] is { } properties && properties is not JsonObject)
            {
                Warn($"The tool '{shown}' is left out: its inputSchema is not a JSON schema of an object.");
                return;
            }

            if (ScrubbedSchema(schema.ToJsonString(), secretValues) is not { } schemaText)
            {
                Warn($"The tool '{shown}' is left out: its inputSchema repeats the server's secrets in a way that cannot be masked.");
                return;
            }

            if (schemaText.Length > options.MaxToolSchemaLength)
            {
                Warn($"The tool '{shown}' is left out: its inputSchema has {schemaText.Length.ToString("N0", CultureInfo.InvariantCulture)} characters, more than {options.MaxToolSchemaLength.ToString("N0", CultureInfo.InvariantCulture)} (Mcp:MaxToolSchemaLength).");
                return;
            }

            var description = tool["description"] is JsonValue d && d.TryGetValue<string>(out var text)
                ? Redaction.ScrubSecrets(StorableText.WithoutNul(text), secretValues)
                : null;
            if (description?.Length > options.MaxToolDescriptionLength)
            {
                description = StorableText.Prefix(description, options.MaxToolDescriptionLength);
            }

            _tools.Add(new McpToolInfo { Name = name, Description = description, InputSchema = schemaText });
        }

        public void Warn(string warning)
        {
            if (_warnings.Count < MaxWarnings)
            {
                _warnings.Add(warning);
            }
            else
            {
                _unsaid++;
            }
        }

        public McpToolListing Result()
        {
            if (_unsaid > 0)
            {
                _warnings.Add($"... and {_unsaid} more warnings.");
            }

            return new McpToolListing(_tools, _warnings);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The stored tool list of MCP server {Server} ({ServerId}) holds {Count} tool(s) whose name holds one of its secrets: left out (a test of the server stores its list again)")]
    private static partial void LogStoredSecretNames(ILogger logger, string server, Guid serverId, int count);
}
