using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace ModularChat.Conversations.Tests;

/// <summary>Request bodies compressed by the client (Content-Encoding), and what is refused of them.</summary>
[Collection(AppCollection.Name)]
public sealed class CompressedBodyTests(ConversationsApp app)
{
    [Theory]
    [InlineData("gzip")]
    [InlineData("br")]
    [InlineData("deflate")]
    [InlineData("gzip, identity")] // identity is no encoding
    [InlineData("identity, BR")]
    public async Task A_compressed_body_is_read_decompressed(string encoding)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await client.NewConversation();
        var body = JsonSerializer.Serialize(new { messages = Enumerable.Range(1, 3).Select(i => new { role = "user", content = $"Compressed message {i}." }) });

        var response = await client.SendAsync(Post($"/api/conversations/{conversation.Id}/messages/batch", Compress(body, encoding), encoding));

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var stored = await (await client.GetAsync($"/api/conversations/{conversation.Id}/messages")).ReadAs<JsonElement>(HttpStatusCode.OK);
        Assert.Equal(["Compressed message 1.", "Compressed message 2.", "Compressed message 3."],
            stored.GetProperty("items").EnumerateArray().Select(m => m.GetProperty("content").GetString()).Order());
    }

    [Fact]
    public async Task A_small_body_that_decompresses_past_the_body_limit_answers_413_and_stores_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await client.NewConversation();
        // ~5 MB of one letter: a few kilobytes compressed, 25 times Limits:MaxRequestBodyBytes (200,000 here) once read.
        var bomb = Compress(JsonSerializer.Serialize(new { role = "user", content = new string('a', 5_000_000) }), "gzip");
        Assert.True(bomb.Length < 20_000);

        var problem = await (await client.SendAsync(Post($"/api/conversations/{conversation.Id}/messages", bomb, "gzip"))).ShouldBeProblem(413);

        Assert.Contains("Limits:MaxRequestBodyBytes", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(0, (await (await client.GetAsync($"/api/conversations/{conversation.Id}")).ReadAs<JsonElement>(HttpStatusCode.OK)).GetProperty("messageCount").GetInt64());
    }

    [Theory]
    [InlineData("gzip", "plain, but labelled gzip")]
    [InlineData("deflate", "plain, but labelled deflate")]
    [InlineData("br", "\u00ff")] // Brotli's decoder throws another exception than gzip's and deflate's
    [InlineData("br", "not brotli at all")]
    public async Task A_body_that_is_not_valid_data_of_its_encoding_answers_400_naming_it(string encoding, string body)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await client.NewConversation();
        byte[] invalid = body == "\u00ff" ? [0xff] : Encoding.UTF8.GetBytes(body);

        var problem = await (await client.SendAsync(Post($"/api/conversations/{conversation.Id}/messages", invalid, encoding))).ShouldBeProblem(400);

        Assert.Contains($"not valid '{encoding}' data", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(0, (await (await client.GetAsync($"/api/conversations/{conversation.Id}")).ReadAs<JsonElement>(HttpStatusCode.OK)).GetProperty("messageCount").GetInt64());
    }

    [Theory]
    [InlineData("compress")]
    [InlineData("gzip, br")] // compressed twice
    [InlineData("x-snappy")]
    public async Task An_encoding_the_service_does_not_read_answers_415_naming_it(string encoding)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var conversation = await client.NewConversation();
        using var request = Post($"/api/conversations/{conversation.Id}/messages", Encoding.UTF8.GetBytes("""{"role":"user","content":"hi"}"""), encoding);

        var problem = await (await client.SendAsync(request)).ShouldBeProblem(415);

        Assert.Contains($"'{encoding}'", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    private static HttpRequestMessage Post(string path, byte[] body, string encoding)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        content.Headers.TryAddWithoutValidation("Content-Encoding", encoding);
        return new HttpRequestMessage(HttpMethod.Post, path) { Content = content };
    }

    private static byte[] Compress(string text, string encoding)
    {
        using var output = new MemoryStream();
        using (Stream compressor = encoding switch
               {
                   _ when encoding.Contains("gzip", StringComparison.OrdinalIgnoreCase) => new GZipStream(output, CompressionLevel.Optimal, leaveOpen: true),
                   _ when encoding.Contains("br", StringComparison.OrdinalIgnoreCase) => new BrotliStream(output, CompressionLevel.Optimal, leaveOpen: true),
                   _ => new ZLibStream(output, CompressionLevel.Optimal, leaveOpen: true), // HTTP's "deflate" is the zlib format
               })
        {
            compressor.Write(Encoding.UTF8.GetBytes(text));
        }

        return output.ToArray();
    }
}
