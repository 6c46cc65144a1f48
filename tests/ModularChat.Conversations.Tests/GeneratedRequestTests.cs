using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// Requests generated from the service's own OpenAPI document, for every operation: path ids of real, unknown, nil and
/// malformed resources, and query values and bodies that follow the schema or break it (wrong types, huge and odd
/// strings, extreme numbers, unknown enum values, missing and unknown properties, malformed JSON). Whatever a client
/// sends, the answer is never a 500, and every refusal is a ProblemDetails. (A run of this kind against the running
/// service found the nil id answering 500 on rename, delete and appends.)
/// </summary>
[Collection(AppCollection.Name)]
public sealed class GeneratedRequestTests(ConversationsApp app)
{
    // Operations that act on every tenant or on the whole node: left out so they cannot disturb the other tests.
    private static readonly HashSet<string> LeftOut = ["POST /api/admin/search/rebuild", "POST /api/admin/secrets/rotate", "POST /api/admin/summaries/sweep"];

    private static readonly JsonNode?[] Odd =
    [
        null, "", " ", new string('x', 5000), -1, 0, long.MaxValue, long.MinValue, 1e308, 3.5, "NaN", true, new JsonArray(),
        new JsonObject(), new JsonArray(1, 2), JsonNode.Parse("""{"a":{"b":[null]}}"""), "\u0000", string.Concat(Enumerable.Repeat("\U0001F600", 10)),
        "2026-13-45", Guid.Empty.ToString(), Guid.NewGuid().ToString(), "-1", "99999999999999999999", "1e5", "%00", "../../etc", "<script>",
        "'; drop table x;--",
    ];

    [Fact]
    public async Task No_generated_request_answers_a_500_and_every_refusal_is_a_problem()
    {
        using var client = app.Client(ModularChatApp.NewUser("generated"), roles: "admin");
        var spec = JsonNode.Parse(await client.GetStringAsync("/openapi/v1.json"))!;
        var conversation = (await client.NewConversation("generated")).Id;
        for (var i = 1; i <= 12; i++)
        {
            await client.PostJson($"/api/conversations/{conversation}/messages", new { role = "user", content = $"message {i} about cats and dogs" });
        }

        var provider = await IdOf(await client.PostJson("/api/providers",
            new { name = "p", kind = "openai-compatible", endpoint = "https://provider.invalid/v1", chatModel = "m", apiKey = "sk-generated-1234" }));
        var mcpServer = await IdOf(await client.PostJson("/api/mcp-servers", new { name = "m", transport = "streamable-http", url = "https://mcp.invalid/mcp" }));

        var random = new Random(20261203);
        var operations = (from path in spec["paths"]!.AsObject()
                          from operation in path.Value!.AsObject()
                          let key = $"{operation.Key.ToUpperInvariant()} {path.Key}"
                          where !LeftOut.Contains(key)
                          select (Method: operation.Key.ToUpperInvariant(), Path: path.Key, Operation: operation.Value!)).ToList();
        Assert.True(operations.Count >= 30, $"only {operations.Count} operations in the OpenAPI document");

        var failures = new List<string>();
        for (var i = 0; i < 700; i++)
        {
            var (method, template, operation) = operations[random.Next(operations.Count)];
            var odd = random.NextDouble() < 0.5 ? 0.02 : 0.25; // half the requests nearly valid, to reach the handlers
            if (method == "DELETE" && random.NextDouble() < 0.9)
            {
                continue; // keep the resources the other requests act on
            }

            var id = template.StartsWith("/api/providers", StringComparison.Ordinal) ? provider
                : template.StartsWith("/api/mcp-servers", StringComparison.Ordinal) ? mcpServer
                : conversation.ToString();
            var path = template
                .Replace("{id}", Pick(random, id, id, id, Guid.NewGuid().ToString(), Guid.Empty.ToString(), "abc"), StringComparison.Ordinal)
                .Replace("{sequence}", Pick(random, "1", "3", "0", "-1", "99999999999", "abc"), StringComparison.Ordinal);
            var query = (operation["parameters"]?.AsArray() ?? [])
                .Where(p => p!["in"]!.GetValue<string>() == "query" && random.NextDouble() < 0.6)
                .Select(p => $"{Uri.EscapeDataString(p!["name"]!.GetValue<string>())}={Uri.EscapeDataString(AsQueryValue(Generate(spec, p["schema"], random, conversation, odd, p["name"]!.GetValue<string>())))}")
                .ToList();
            using var request = new HttpRequestMessage(new HttpMethod(method), query.Count > 0 ? $"{path}?{string.Join('&', query)}" : path);
            if (operation["requestBody"]?["content"]?.AsObject().FirstOrDefault().Value?["schema"] is { } bodySchema)
            {
                var roll = random.NextDouble();
                var body = roll < 0.05 ? "{not json"
                    : roll < 0.08 ? "{\"a\":" + new string('[', 2000) + new string(']', 2000) + "}"
                    : roll < 0.11 ? (Pick(random, Odd)?.ToJsonString() ?? "null")
                    : Generate(spec, bodySchema, random, conversation, odd)?.ToJsonString() ?? "null";
                request.Content = new StringContent(body, Encoding.UTF8, "application/json");
            }

            var response = await client.SendAsync(request);
            var status = (int)response.StatusCode;
            var upstream = path.EndsWith("/chat", StringComparison.Ordinal) || path.EndsWith("/test", StringComparison.Ordinal);
            if (status >= 500 && !(upstream && status is 502 or 504))
            {
                failures.Add($"{method} {request.RequestUri} {await Describe(request)} -> {status} {await response.Content.ReadAsStringAsync()}");
            }
            else if (status >= 400 && response.Content.Headers.ContentType?.MediaType != "application/problem+json")
            {
                failures.Add($"{method} {request.RequestUri} -> {status} without a ProblemDetails ({response.Content.Headers.ContentType})");
            }
        }

        Assert.True(failures.Count == 0, $"{failures.Count} bad answers:\n" + string.Join("\n", failures.Take(10)));
    }

    private static async Task<string> IdOf(HttpResponseMessage created)
        => (await created.ReadAs<JsonElement>(HttpStatusCode.Created)).GetProperty("id").GetString()!;

    private static T Pick<T>(Random random, params T[] choices) => choices[random.Next(choices.Length)];

    private static async Task<string> Describe(HttpRequestMessage request)
        => request.Content is null ? "" : (await request.Content.ReadAsStringAsync()) is var body && body.Length > 300 ? body[..300] + "..." : body;

    private static string AsQueryValue(JsonNode? value) => value switch
    {
        null => "",
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        _ => value.ToJsonString(),
    };

    /// <summary>
    /// A value for <paramref name="schema"/> (of a property or parameter called <paramref name="name"/>): what it describes,
    /// except that any value is anything at all with the probability <paramref name="odd"/>.
    /// </summary>
    private static JsonNode? Generate(JsonNode spec, JsonNode? schema, Random random, Guid conversation, double odd, string? name = null, int depth = 0)
    {
        if (schema?["$ref"]?.GetValue<string>() is { } reference)
        {
            schema = spec["components"]!["schemas"]![reference.Split('/')[^1]];
        }

        if (schema is null || depth > 3 || random.NextDouble() < odd)
        {
            return Pick(random, Odd)?.DeepClone();
        }

        var nearlyValid = odd < 0.1;
        if (nearlyValid && name is "expectedVersion" or "cursor")
        {
            return null; // left out: a guessed version or cursor is refused, and the request would not reach the handler
        }

        if (schema["enum"] is JsonArray values && values.Count > 0)
        {
            return random.NextDouble() >= odd ? values[random.Next(values.Count)]?.DeepClone() : Pick(random, Odd)?.DeepClone();
        }

        var type = schema["type"] switch
        {
            JsonArray types => types.Select(t => t!.GetValue<string>()).FirstOrDefault(t => t != "null"),
            JsonValue single => single.GetValue<string>(),
            _ => schema["properties"] is not null ? "object" : "string", // an untyped schema: taken as text
        };
        switch (type)
        {
            case "object":
                var result = new JsonObject();
                foreach (var property in schema["properties"]?.AsObject() ?? [])
                {
                    if (random.NextDouble() >= odd)
                    {
                        result[property.Key] = Generate(spec, property.Value, random, conversation, odd, property.Key, depth + 1);
                    }
                }

                if (random.NextDouble() < odd)
                {
                    result["unknownProperty"] = Pick(random, Odd)?.DeepClone();
                }

                return result;
            case "array":
                var array = new JsonArray();
                for (var n = random.Next(4); n > 0; n--)
                {
                    array.Add(Generate(spec, schema["items"], random, conversation, odd, name, depth + 1));
                }

                return array;
            case "string":
                return schema["format"]?.GetValue<string>() switch
                {
                    "uuid" => Pick(random, conversation.ToString(), Guid.NewGuid().ToString(), "nope"),
                    "date-time" => nearlyValid ? "2026-01-01T00:00:00Z" : Pick(random, "2026-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "bad"),
                    _ => name switch
                    {
                        "role" => Pick(random, "user", "assistant", "system", "tool"),
                        "externalId" => $"e{random.Next(5)}",
                        "url" or "endpoint" => "https://generated.invalid/x",
                        "kind" => "openai-compatible",
                        "transport" => Pick(random, "sse", "streamable-http"),
                        "cursor" => Pick(random, "", "bad"),
                        _ => Pick(random, "hello cats and dogs", "a", new string('y', 100)),
                    },
                };
            case "integer" or "number":
                return Pick(random, 0L, 1L, 5L, -5L, 1000L, 1_000_000_000L, 2_147_483_648L, 4_611_686_018_427_387_904L);
            case "boolean":
                return random.NextDouble() < 0.5;
            default:
                return Pick(random, Odd)?.DeepClone();
        }
    }
}
