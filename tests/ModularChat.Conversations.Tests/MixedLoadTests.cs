using System.Collections.Concurrent;
using System.Net;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// Eight clients at once, on a tenant whose policy archives what summaries cover: single and batch appends, renames,
/// contexts, pages of messages, summaries on demand, searches and now and then a deletion, on a handful of shared
/// conversations. Nothing answers a 500, every surviving conversation still reads 1..N (archived messages included),
/// and nothing the service removed made Marten's daemon pause on a hole in the event sequence (ADR 0009). (A load of
/// this kind against the running service found the deletions' and retention's holes.)
/// </summary>
[Collection(RetentionCollection.Name)]
public sealed class MixedLoadTests(RetentionApp app)
{
    [Fact]
    public async Task Concurrent_appends_summaries_retention_and_deletions_keep_every_message_and_never_stall_the_daemon()
    {
        using var client = app.Client(ModularChatApp.NewUser("mixed"), RetentionTenants.Archive);
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        var first = await SequenceAsync(connection);

        var live = new List<Guid>();
        for (var i = 0; i < 5; i++)
        {
            live.Add((await client.NewConversation("mixed")).Id);
        }

        var deleted = new ConcurrentDictionary<Guid, bool>();
        var unexpected = new ConcurrentQueue<string>();
        var gate = new Lock();
        string[] words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];

        async Task Worker(int seed)
        {
            var random = new Random(seed);
            string Text() => string.Join(' ', Enumerable.Range(0, random.Next(3, 30)).Select(_ => words[random.Next(words.Length)]));
            for (var n = 0; n < 60; n++)
            {
                Guid id;
                lock (gate)
                {
                    id = live[random.Next(live.Count)];
                }

                var roll = random.Next(100);
                var (what, response) = roll switch
                {
                    < 40 => ("append", await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content = Text() })),
                    < 55 => ("batch", await client.PostJson($"/api/conversations/{id}/messages/batch",
                        new { messages = Enumerable.Range(0, random.Next(2, 20)).Select(_ => new { role = "assistant", content = Text() }).ToArray() })),
                    < 60 => ("rename", await client.PatchJson($"/api/conversations/{id}", new { title = Text() is var title && title.Length > 40 ? title[..40] : title })),
                    < 70 => ("context", await client.GetAsync($"/api/conversations/{id}/context?maxTokens=500")),
                    < 80 => ("list", await client.GetAsync($"/api/conversations/{id}/messages?includeArchived=true&limit=100")),
                    < 88 => ("summary", await client.PostJson($"/api/conversations/{id}/summary", new { })),
                    < 97 => ("search", await client.GetAsync($"/api/search?q={words[random.Next(words.Length)]}&conversationId={id}")),
                    _ => ("delete", await Delete(id)),
                };
                var status = (int)response.StatusCode;
                var fine = status is 200 or 201 or 202 or 204 || (status == 404 && deleted.ContainsKey(id));
                if (!fine)
                {
                    unexpected.Enqueue($"{what} {id} -> {status} {await response.Content.ReadAsStringAsync()}");
                }
            }
        }

        async Task<HttpResponseMessage> Delete(Guid id)
        {
            deleted[id] = true; // from now on a 404 for it is a right answer
            var response = await client.DeleteAsync($"/api/conversations/{id}");
            var replacement = (await client.NewConversation("mixed")).Id;
            lock (gate)
            {
                live.Remove(id);
                live.Add(replacement);
            }

            return response;
        }

        await Task.WhenAll(Enumerable.Range(1, 8).Select(seed => Task.Run(() => Worker(seed))));
        Assert.True(unexpected.IsEmpty, $"{unexpected.Count} unexpected answers:\n" + string.Join("\n", unexpected.Take(10)));

        // Every conversation left reads 1..N, with what retention archived meanwhile.
        foreach (var id in live)
        {
            var count = (await (await client.GetAsync($"/api/conversations/{id}")).ReadAs<ConversationDto>(HttpStatusCode.OK)).MessageCount;
            var sequences = new List<long>();
            string? cursor = null;
            do
            {
                var page = await (await client.GetAsync($"/api/conversations/{id}/messages?includeArchived=true&limit=500" + (cursor is null ? "" : $"&cursor={cursor}")))
                    .ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
                sequences.AddRange(page.Items.Select(m => m.Sequence));
                cursor = page.NextCursor;
            }
            while (cursor is not null);

            Assert.Equal(Enumerable.Range(1, (int)count).Select(i => (long)i), sequences);
        }

        // Once the deletions' purges are done and the daemon has read everything, no hole of this load's range was skipped.
        // (A skip is recorded from the mark it was stuck at: one that starts before the load is an earlier test's, such as
        // RetentionTests driving the executor's plan and commit directly, and may reach into the load's range.)
        var last = await SequenceAsync(connection);
        await Eventually.Until(() => HighWaterMarkAsync(connection), mark => mark >= last, seconds: 60, what: "The high-water mark did not reach the load's last event");
        await Eventually.Until(() => StreamEventsAsync(connection, [.. deleted.Keys]), left => left == 0, seconds: 60, what: "Deleted conversations' events are still there");
        await using var skips = new NpgsqlCommand(
            "select count(*) from modularchat.mt_high_water_skips where starting_sequence >= @first and starting_sequence < @last", connection);
        skips.Parameters.AddWithValue("first", first);
        skips.Parameters.AddWithValue("last", last);
        Assert.Equal(0L, (long)(await skips.ExecuteScalarAsync())!);
    }

    private static async Task<long> SequenceAsync(NpgsqlConnection connection)
    {
        await using var command = new NpgsqlCommand("select last_value from modularchat.mt_events_sequence", connection);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private static async Task<long> HighWaterMarkAsync(NpgsqlConnection connection)
    {
        await using var command = new NpgsqlCommand("select last_seq_id from modularchat.mt_event_progression where name = 'HighWaterMark'", connection);
        return await command.ExecuteScalarAsync() is long mark ? mark : 0;
    }

    private static async Task<long> StreamEventsAsync(NpgsqlConnection connection, Guid[] streams)
    {
        await using var command = new NpgsqlCommand("select count(*) from modularchat.mt_events where stream_id = any(@streams)", connection);
        command.Parameters.AddWithValue("streams", streams);
        return (long)(await command.ExecuteScalarAsync())!;
    }
}
