using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Serialization;
using Xunit;

namespace ModularChat.Testing;

/// <summary>Reading and calling the REST API the way a client does, with assertions on what comes back.</summary>
public static class HttpApi
{
    /// <summary>The API's JSON conventions: web defaults, enums as camelCase strings.</summary>
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    /// <summary>Asserts the status code (showing the body when it differs) and reads the body as <typeparamref name="T"/>.</summary>
    public static async Task<T> ReadAs<T>(this HttpResponseMessage response, HttpStatusCode expected)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"Expected {(int)expected} but got {(int)response.StatusCode}: {body}");
        return JsonSerializer.Deserialize<T>(body, Json)!;
    }

    /// <summary>Asserts an RFC 9457 ProblemDetails with <paramref name="status"/> and a title, and returns it.</summary>
    public static async Task<JsonElement> ShouldBeProblem(this HttpResponseMessage response, int status)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == status, $"Expected {status} but got {(int)response.StatusCode}: {body}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonDocument.Parse(body).RootElement;
        Assert.Equal(status, problem.GetProperty("status").GetInt32());
        Assert.False(string.IsNullOrWhiteSpace(problem.GetProperty("title").GetString()));
        return problem;
    }

    /// <summary>Waits until the Summaries module has stored a summary of the conversation (it works in the background).</summary>
    public static Task<HttpStatusCode> WaitForSummary(this HttpClient client, Guid conversationId)
        => Eventually.Until(async () => (await client.GetAsync($"/api/conversations/{conversationId}/summary")).StatusCode,
            status => status == HttpStatusCode.OK, seconds: Eventually.BackgroundSeconds, what: "No summary");

    public static Task<HttpResponseMessage> PostJson(this HttpClient client, string url, object body)
        => client.PostAsJsonAsync(url, body, Json);

    public static Task<HttpResponseMessage> PutJson(this HttpClient client, string url, object body)
        => client.PutAsJsonAsync(url, body, Json);

    public static Task<HttpResponseMessage> PatchJson(this HttpClient client, string url, object body)
        => client.PatchAsJsonAsync(url, body, Json);

    /// <summary>Posts <paramref name="json"/> as it is (malformed bodies, unknown fields).</summary>
    public static Task<HttpResponseMessage> PostRaw(this HttpClient client, string url, string json)
        => client.PostAsync(url, new StringContent(json, System.Text.Encoding.UTF8, "application/json"));
}
