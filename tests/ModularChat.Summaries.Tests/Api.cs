global using ModularChat.Testing;
using System.Net;

namespace ModularChat.Summaries.Tests;

/// <summary>Small helpers over HttpClient for using the API the way a client does.</summary>
internal static class Api
{
    public static async Task<Guid> NewConversation(this HttpClient client, string title = "summaries")
        => (await (await client.PostJson("/api/conversations", new { title })).ReadAs<IdDto>(HttpStatusCode.Created)).Id;

    /// <summary>Appends messages one request each (so every message event is its own), as a chat app does.</summary>
    public static async Task AppendEach(this HttpClient client, Guid conversation, IEnumerable<object> messages)
    {
        foreach (var m in messages)
        {
            (await client.PostJson($"/api/conversations/{conversation}/messages", m)).EnsureSuccessStatusCode();
        }
    }

    public static async Task AppendBatch(this HttpClient client, Guid conversation, IEnumerable<object> messages)
        => (await client.PostJson($"/api/conversations/{conversation}/messages/batch", new { messages })).EnsureSuccessStatusCode();

    /// <summary>Numbered chat turns of two speakers, each with a distinct fact.</summary>
    public static IEnumerable<object> Turns(int from, int to, string topic = "trip")
        => Enumerable.Range(from, to - from + 1).Select(i => (object)new
        {
            role = i % 2 == 1 ? "user" : "assistant",
            content = $"Turn {i} about the {topic}: {(i % 2 == 1 ? "Maria" : "Tomas")} booked item number {i} for the {topic} in Lisbon, costing {i * 10} euros.",
            metadata = new Dictionary<string, string> { ["speaker"] = i % 2 == 1 ? "Maria" : "Tomas" },
            createdAt = new DateTimeOffset(2024, 3, 1, 9, 0, 0, TimeSpan.Zero).AddMinutes(i),
        });

    public static async Task<SummaryDto?> CurrentSummary(this HttpClient client, Guid conversation)
    {
        using var response = await client.GetAsync($"/api/conversations/{conversation}/summary");
        return response.StatusCode == HttpStatusCode.NotFound ? null : await response.ReadAs<SummaryDto>(HttpStatusCode.OK);
    }

    /// <summary>Polls until the current summary covers <paramref name="toSequence"/> (background work: a generous deadline, no timing assertion).</summary>
    public static async Task<SummaryDto> SummaryCovering(this HttpClient client, Guid conversation, long toSequence, int seconds = Eventually.BackgroundSeconds)
        => await Eventually.Until(() => client.CurrentSummary(conversation), s => s is not null && s.ToSequence >= toSequence, seconds)
           ?? throw new InvalidOperationException("no summary");

    public static async Task<List<SummaryDto>> History(this HttpClient client, Guid conversation)
    {
        var all = new List<SummaryDto>();
        string? cursor = null;
        do
        {
            var page = await (await client.GetAsync($"/api/conversations/{conversation}/summaries?limit=2{(cursor is null ? "" : "&cursor=" + cursor)}"))
                .ReadAs<PageDto<SummaryDto>>(HttpStatusCode.OK);
            all.AddRange(page.Items);
            cursor = page.NextCursor;
        }
        while (cursor is not null);

        return all;
    }
}

internal sealed record IdDto(Guid Id);

internal sealed record PageDto<T>(List<T> Items, string? NextCursor);

internal sealed record SummaryDto(
    Guid ConversationId,
    int Revision,
    string Text,
    long FromSequence,
    long ToSequence,
    int TokenCount,
    string Reason,
    string Summarizer,
    string Model,
    string PromptVersion,
    string Variant,
    int InputTokens,
    int OutputTokens,
    double DurationMs,
    DateTimeOffset RevisedAt,
    long? MessageCount,
    long? PendingMessages,
    int? BasedOnRevision = null,
    long? ReadFromSequence = null);

internal sealed record SummaryRequestedDto(Guid ConversationId, long UpToSequence, long CoveredTo, bool Queued);

internal sealed record RetentionRangeDto(long FromSequence, long ToSequence);

/// <summary>What retention took out of a conversation (<c>GET /api/conversations/{id}/retention</c>).</summary>
internal sealed record RetentionDto(List<RetentionRangeDto> Archived, List<RetentionRangeDto> Deleted);
