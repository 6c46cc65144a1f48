using System.Net;
using Npgsql;
using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>Embeddings from a tenant's OpenAI-compatible provider, model changes, failures.</summary>
[Collection(AppCollection.Name)]
public sealed class EmbeddingTests(SearchApp app)
{
    [Fact]
    public async Task A_tenant_with_a_provider_is_embedded_by_its_OpenAI_compatible_endpoint()
    {
        var user = ModularChatApp.NewUser();
        app.OpenAi.Embedder = TopicEmbedding;
        await app.Providers.UseAsync(user, "fake-embed-3");
        using var client = app.Client(user);
        await client.StartConversation("cars",
            Message("I finally bought a car last week."),
            Message("The recipe calls for two onions."),
            Message("Our dog chased the mailman again."));
        var status = await client.WaitForIndexing(3);

        // A real model knows "automobile" means car although they share no letters; the fake one does too.
        var result = await (await client.GetAsync("/api/search?q=automobile&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK);

        Assert.Equal("provider:fake-openai:fake-embed-3", status.Model);
        Assert.Equal("provider:fake-openai:fake-embed-3", result.Semantic.Model);
        Assert.Contains("car", result.Hits[0].Snippet, StringComparison.Ordinal);
        Assert.Contains(app.OpenAi.Requests, r => r.Path == "/v1/embeddings" && r.Body["model"]?.ToString() == "fake-embed-3" && r.Authorization == "Bearer test-key");
        Assert.Equal([(string)"provider:fake-openai:fake-embed-3:4"], await StoredModelsAsync(user));
    }

    [Fact]
    public async Task Changing_a_tenants_embedding_model_embeds_its_entries_again()
    {
        var user = ModularChatApp.NewUser();
        app.OpenAi.Embedder = TopicEmbedding;
        using var client = app.Client(user);
        await client.StartConversation("switch", Message("The car needs new tyres."), Message("Dinner was a vegetable soup.", "assistant"));
        await client.WaitForIndexing(2);
        Assert.Equal(["modularchat-hashed-v1-d1024:1024"], await StoredModelsAsync(user));

        await app.Providers.UseAsync(user, "fake-embed-large");
        var models = await Eventually.Until(() => StoredModelsAsync(user), m => m.SequenceEqual(["provider:fake-openai:fake-embed-large:4"]));
        Assert.Equal(["provider:fake-openai:fake-embed-large:4"], models);
        await client.WaitForIndexing(2);
        var hits = (await (await client.GetAsync("/api/search?q=automobile&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
        Assert.Contains("car", hits[0].Snippet, StringComparison.Ordinal);

        await app.Providers.UseAsync(user, null);
        models = await Eventually.Until(() => StoredModelsAsync(user), m => m.SequenceEqual(["modularchat-hashed-v1-d1024:1024"]));
        Assert.Equal(["modularchat-hashed-v1-d1024:1024"], models);
    }

    [Fact]
    public async Task When_the_provider_fails_entries_wait_and_searches_answer_with_keyword_hits()
    {
        var user = ModularChatApp.NewUser();
        await app.Providers.UseAsync(user, "fake-broken");
        app.OpenAi.Embedder = text => text.Contains("violin", StringComparison.Ordinal) || text == "violin lessons"
            ? throw new InvalidOperationException("the model is down")
            : TopicEmbedding(text);
        try
        {
            using var client = app.Client(user);
            await client.StartConversation("music", Message("My violin lessons start on Tuesday."));
            await Eventually.Until(() => AttemptsAsync(user), a => a > 0);

            var result = await (await client.GetAsync("/api/search?q=violin+lessons")).ReadAs<SearchResult>(HttpStatusCode.OK);

            Assert.False(result.Semantic.Available);
            Assert.NotNull(result.Semantic.Problem);
            Assert.Contains("violin", Assert.Single(result.Hits).Snippet, StringComparison.Ordinal);
            Assert.Equal(1, (await (await client.GetAsync("/api/search/status")).ReadAs<Status>(HttpStatusCode.OK)).Pending);
        }
        finally
        {
            await app.Providers.UseAsync(user, null);
        }
    }

    /// <summary>A tiny "language model": one dimension per topic, synonyms included.</summary>
    private static float[] TopicEmbedding(string text)
    {
        string[][] topics = [["car", "automobile", "tyres", "vehicle"], ["soup", "onions", "recipe", "dinner", "vegetable"], ["dog", "mailman", "cat"], ["violin", "music"]];
        var lower = text.ToLowerInvariant();
        var vector = topics.Select(words => words.Count(w => lower.Contains(w, StringComparison.Ordinal)) + 0.01f).ToArray();
        var norm = MathF.Sqrt(vector.Sum(v => v * v));
        return vector.Select(v => v / norm).ToArray();
    }

    private async Task<List<string>> StoredModelsAsync(string tenant)
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(
            "select distinct model || ':' || dimensions from modularchat.mc_search_vectors where tenant_id = $1 order by 1", connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenant });
        var models = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            models.Add(reader.GetString(0));
        }

        return models;
    }

    private async Task<int> AttemptsAsync(string tenant)
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand("select coalesce(max(attempts), 0) from modularchat.mc_search_pending where tenant_id = $1", connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenant });
        return (int)(await command.ExecuteScalarAsync())!;
    }
}
