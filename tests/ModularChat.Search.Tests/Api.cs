global using ModularChat.Testing;
using System.Net;
using System.Text.Json;

namespace ModularChat.Search.Tests;

/// <summary>Reading and writing the API the way a client does.</summary>
internal static class Api
{
    /// <summary>Starts a conversation and appends <paramref name="messages"/> in one batch; returns its id.</summary>
    public static async Task<Guid> StartConversation(this HttpClient client, string title, params object[] messages)
    {
        var created = await (await client.PostJson("/api/conversations", new { title })).ReadAs<JsonElement>(HttpStatusCode.Created);
        var id = created.GetProperty("id").GetGuid();
        if (messages.Length > 0)
        {
            await (await client.PostJson($"/api/conversations/{id}/messages/batch", new { messages })).ReadAs<JsonElement>(HttpStatusCode.Created);
        }

        return id;
    }

    public static object Message(string content, string role = "user", string? externalId = null, object? metadata = null, DateTimeOffset? createdAt = null)
        => new { role, content, externalId, metadata, createdAt };

    public static async Task<SearchResult> Search(this HttpClient client, string query)
        => await (await client.GetAsync("/api/search?q=" + query)).ReadAs<SearchResult>(HttpStatusCode.OK);

    /// <summary>How many of the caller's messages a keyword search finds holding <paramref name="word"/> (a neighbouring turn of a match is ranked too, without highlights).</summary>
    public static async Task<int> KeywordMatches(this HttpClient client, string word)
        => (await client.Search(word + "&mode=keyword")).Hits.Count(h => h.Highlights.Count > 0);

    /// <summary>
    /// Environment for host processes of a cluster of their own that check in every 2 s and take a node silent for 4 s as
    /// stale, so projections move between nodes within seconds.
    /// </summary>
    public static Dictionary<string, string> FastCluster() => new()
    {
        ["Messaging__HealthCheckInterval"] = "00:00:02",
        ["Messaging__StaleNodeTimeout"] = "00:00:04",
    };

    /// <summary>The caller's indexing progress.</summary>
    public static async Task<Status> SearchStatus(this HttpClient client)
        => await (await client.GetAsync("/api/search/status")).ReadAs<Status>(HttpStatusCode.OK);

    /// <summary>Waits until every entry of the caller's tenant is indexed and embedded (at least <paramref name="entries"/> of them).</summary>
    public static Task<Status> WaitForIndexing(this HttpClient client, int entries)
        => Eventually.Until(
            client.SearchStatus,
            status => status.Entries >= entries && status.Embedded >= status.Entries && status.Pending == 0, seconds: Eventually.BackgroundSeconds, what: "Indexing did not finish");

}

internal sealed record Status(long Entries, long Embedded, long Pending, long Refused, string Model, long IndexingLag, bool UpToDate);

internal sealed record Highlight(int Start, int Length);

internal sealed record ContextTurn(long Sequence, string? Role, string? Speaker, string? ExternalId, DateTimeOffset CreatedAt, string Content);

internal sealed record Hit(
    Guid Id, Guid ConversationId, string Kind, long? Sequence, string? ExternalId, string? Role, string? Speaker, DateTimeOffset CreatedAt,
    string Snippet, List<Highlight> Highlights, string HighlightedSnippet, double Score, int? KeywordRank, int? SemanticRank, int? Revision,
    long? FromSequence, long? ToSequence, Dictionary<string, string>? Metadata, List<ContextTurn>? Before, List<ContextTurn>? After);

internal sealed record Semantic(string? Model, bool Available, string? Problem);

internal sealed record SearchResult(string Query, string Mode, Semantic Semantic, List<Hit> Hits);
