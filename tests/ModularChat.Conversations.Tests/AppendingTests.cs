using System.Net;

namespace ModularChat.Conversations.Tests;

[Collection(AppCollection.Name)]
public sealed class AppendingTests(ConversationsApp app)
{
    [Fact]
    public async Task Appending_a_message_answers_201_with_its_sequence_and_location()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var createdAt = new DateTimeOffset(2024, 5, 1, 10, 0, 0, TimeSpan.Zero);

        var response = await client.PostJson($"/api/conversations/{c.Id}/messages", new
        {
            role = "user", content = "First!", externalId = "ext-1", metadata = new Dictionary<string, string> { ["lang"] = "en" }, createdAt,
        });
        var appended = await response.ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        Assert.Equal(1, appended.Sequence);
        Assert.False(appended.Duplicate);
        Assert.Equal(c.Version + 1, appended.Version);
        Assert.Equal($"/api/conversations/{c.Id}/messages/1", response.Headers.Location?.ToString());
        var stored = await (await client.GetAsync($"/api/conversations/{c.Id}/messages/1")).ReadAs<MessageDto>(HttpStatusCode.OK);
        Assert.Equal(("user", "First!", "ext-1", "en", createdAt), (stored.Role, stored.Content, stored.ExternalId, stored.Metadata!["lang"], stored.CreatedAt));
    }

    [Fact]
    public async Task Appending_a_message_twice_with_the_same_external_id_stores_it_once()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var message = new { role = "user", content = "Only once, please", externalId = "retry-me" };

        var first = await (await client.PostJson($"/api/conversations/{c.Id}/messages", message)).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        var retry = await (await client.PostJson($"/api/conversations/{c.Id}/messages", message)).ReadAs<AppendResponseDto>(HttpStatusCode.OK);

        Assert.True(retry.Duplicate);
        Assert.Equal((first.Id, first.Sequence), (retry.Id, retry.Sequence));
        var conversation = await (await client.GetAsync($"/api/conversations/{c.Id}")).ReadAs<ConversationDto>(HttpStatusCode.OK);
        Assert.Equal(1, conversation.MessageCount);
        Assert.Equal(1, await app.CountEvents(c.Id, "message_appended"));
    }

    [Fact]
    public async Task An_external_id_sent_again_with_another_role_or_content_is_refused_with_409_naming_the_original()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var messages = $"/api/conversations/{c.Id}/messages";
        await (await client.PostJson(messages, new { role = "user", content = "Book the hotel", externalId = "m-1" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        await (await client.PostJson(messages, new { role = "assistant", content = "Done", externalId = "m-2" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        var edited = await (await client.PostJson(messages, new { role = "user", content = "Book the flight", externalId = "m-1" })).ShouldBeProblem(409);
        Assert.Contains("externalId 'm-1' already names message 1", edited.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Contains("another content", edited.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(("m-1", 1), (edited.GetProperty("externalId").GetString(), edited.GetProperty("sequence").GetInt64()));
        var otherRole = await (await client.PostJson(messages, new { role = "assistant", content = "Book the hotel", externalId = "m-1" })).ShouldBeProblem(409);
        Assert.Contains("another role", otherRole.GetProperty("detail").GetString(), StringComparison.Ordinal);
        // In a batch: nothing of it is stored, also not its new messages.
        var batch = new[] { new { role = "user", content = "Thanks", externalId = "m-3" }, new { role = "assistant", content = "Not done", externalId = "m-2" } };
        var refused = await (await client.PostJson($"{messages}/batch", new { messages = batch })).ShouldBeProblem(409);
        Assert.Equal(("m-2", 2), (refused.GetProperty("externalId").GetString(), refused.GetProperty("sequence").GetInt64()));

        // A retry may stamp its metadata and time anew: still the same message.
        var retry = await (await client.PostJson(messages, new
        {
            role = "user", content = "Book the hotel", externalId = "m-1", metadata = new Dictionary<string, string> { ["try"] = "2" }, createdAt = DateTimeOffset.UtcNow,
        })).ReadAs<AppendResponseDto>(HttpStatusCode.OK);
        Assert.Equal((1L, true), (retry.Sequence, retry.Duplicate));
        var page = await (await client.GetAsync(messages)).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal(["Book the hotel", "Done"], page.Items.Select(m => m.Content));
        Assert.Equal(2, await app.CountEvents(c.Id, "message_appended"));
    }

    [Fact]
    public async Task A_batch_that_uses_one_external_id_for_two_different_messages_is_refused_and_one_repeated_message_is_stored_once()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var batch = $"/api/conversations/{c.Id}/messages/batch";

        var twoMessages = new[] { new { role = "user", content = "a", externalId = "x" }, new { role = "user", content = "b", externalId = "x" } };
        var problem = await (await client.PostJson(batch, new { messages = twoMessages })).ShouldBeProblem(409);
        Assert.Contains("externalId 'x' names two different messages of this request", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(0, await app.CountEvents(c.Id, "message_appended"));

        var repeated = new[] { new { role = "user", content = "a", externalId = "x" }, new { role = "user", content = "a", externalId = "x" } };
        var stored = await (await client.PostJson(batch, new { messages = repeated })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        Assert.Equal([(1L, false), (1L, true)], stored.Messages.Select(m => (m.Sequence, m.Duplicate)));
        Assert.Equal(1, await app.CountEvents(c.Id, "message_appended"));
    }

    [Fact]
    public async Task A_batch_retry_returns_the_originals_and_stores_only_new_messages()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var batch = new[] { new { role = "user", content = "a", externalId = "1" }, new { role = "assistant", content = "b", externalId = "2" } };
        var first = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = batch })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);

        var again = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = batch })).ReadAs<BatchResponseDto>(HttpStatusCode.OK);
        Assert.All(again.Messages, m => Assert.True(m.Duplicate));
        Assert.Equal(first.Messages.Select(m => m.Id), again.Messages.Select(m => m.Id));

        var extended = batch.Append(new { role = "user", content = "c", externalId = "3" }).ToArray();
        var third = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages = extended })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        Assert.Equal(new[] { true, true, false }, third.Messages.Select(m => m.Duplicate));
        Assert.Equal(3, third.Messages[2].Sequence);
        Assert.Equal(3, await app.CountEvents(c.Id, "message_appended"));
    }

    [Fact]
    public async Task A_batch_is_appended_in_order_in_one_transaction()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var messages = Enumerable.Range(1, 50).Select(i => new { role = "user", content = $"line {i}" }).ToArray();

        var result = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);

        Assert.Equal(Enumerable.Range(1, 50).Select(i => (long)i), result.Messages.Select(m => m.Sequence));
        Assert.Equal(c.Version + 50, result.Version);
    }

    [Fact]
    public async Task A_batch_with_one_bad_message_stores_none_of_them()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var messages = new object[] { new { role = "user", content = "fine" }, new { role = "user", content = "" }, new { role = "user", content = "fine too" } };

        var problem = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", new { messages })).ShouldBeProblem(400);

        Assert.True(problem.GetProperty("errors").TryGetProperty("messages[1].content", out _), problem.ToString());
        Assert.Equal(0, await app.CountEvents(c.Id, "message_appended"));
    }

    [Fact]
    public async Task Appending_with_a_stale_expected_version_answers_409_and_stores_nothing()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var first = await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "one", expectedVersion = c.Version }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        var problem = await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "two", expectedVersion = c.Version }))
            .ShouldBeProblem(409);

        Assert.Equal(first.Version, problem.GetProperty("currentVersion").GetInt64());
        Assert.Equal(1, await app.CountEvents(c.Id, "message_appended"));
        await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "two", expectedVersion = first.Version }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
    }

    [Fact]
    public async Task A_client_time_is_kept_to_the_microsecond_as_the_database_and_search_keep_it()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var precise = new DateTimeOffset(2024, 5, 1, 10, 0, 0, TimeSpan.FromHours(2)).AddTicks(12_345_678); // 1.2345678 s
        var kept = new DateTimeOffset(2024, 5, 1, 10, 0, 1, TimeSpan.FromHours(2)).AddTicks(2_345_670);

        var appended = await (await client.PostJson($"/api/conversations/{c.Id}/messages", new { role = "user", content = "when?", createdAt = precise }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        var stored = await (await client.GetAsync($"/api/conversations/{c.Id}/messages/1")).ReadAs<MessageDto>(HttpStatusCode.OK);

        Assert.Equal(kept, appended.CreatedAt);
        Assert.Equal(kept, stored.CreatedAt);
        Assert.Equal(kept.Offset, stored.CreatedAt.Offset);
    }

    [Fact]
    public async Task A_retry_with_its_expected_version_answers_the_original_and_a_partly_new_one_409()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var c = await client.NewConversation();
        var message = new { role = "user", content = "hello", externalId = "e1", expectedVersion = c.Version };
        var first = await (await client.PostJson($"/api/conversations/{c.Id}/messages", message)).ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        // The client lost the answer and sends the same request again: it was stored, so it is answered, not refused as stale.
        var retry = await (await client.PostJson($"/api/conversations/{c.Id}/messages", message)).ReadAs<AppendResponseDto>(HttpStatusCode.OK);
        Assert.True(retry.Duplicate);
        Assert.Equal((first.Id, first.Sequence, first.Version), (retry.Id, retry.Sequence, retry.Version));

        var batch = new { messages = new[] { new { role = "user", content = "a", externalId = "b1" }, new { role = "assistant", content = "b", externalId = "b2" } }, expectedVersion = first.Version };
        var stored = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", batch)).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        var batchRetry = await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", batch)).ReadAs<BatchResponseDto>(HttpStatusCode.OK);
        Assert.Equal(stored.Messages.Select(m => m.Id), batchRetry.Messages.Select(m => m.Id));

        // A request that would store something still needs the version it expects.
        var partlyNew = new { messages = new[] { new { role = "user", content = "a", externalId = "b1" }, new { role = "user", content = "new", externalId = "b3" } }, expectedVersion = first.Version };
        await (await client.PostJson($"/api/conversations/{c.Id}/messages/batch", partlyNew)).ShouldBeProblem(409);
        Assert.Equal(3, await app.CountEvents(c.Id, "message_appended"));
    }

    [Fact]
    public async Task Twenty_parallel_clients_keep_every_message_exactly_once_with_gap_free_sequences()
    {
        var user = ModularChatApp.NewUser();
        using var setup = app.Client(user);
        var c = await setup.NewConversation();
        const int clients = 20, perClient = 5;

        var appends = Enumerable.Range(0, clients).Select(async client =>
        {
            using var http = app.Client(user);
            var results = new List<AppendResponseDto>();
            for (var i = 0; i < perClient; i++)
            {
                // Every client also retries each message once: the retry must not store anything.
                var body = new { role = "user", content = $"client {client} message {i}", externalId = $"{client}-{i}" };
                var tasks = new[] { http.PostJson($"/api/conversations/{c.Id}/messages", body), http.PostJson($"/api/conversations/{c.Id}/messages", body) };
                var responses = await Task.WhenAll(tasks);
                Assert.All(responses, r => Assert.True(r.IsSuccessStatusCode, r.StatusCode.ToString()));
                results.AddRange(await Task.WhenAll(responses.Select(r => r.ReadAs<AppendResponseDto>(r.StatusCode))));
            }

            return results;
        });
        var all = (await Task.WhenAll(appends)).SelectMany(r => r).ToList();

        var messages = await ReadAllMessages(setup, c.Id);
        Assert.Equal(clients * perClient, messages.Count);
        Assert.Equal(Enumerable.Range(1, clients * perClient).Select(i => (long)i), messages.Select(m => m.Sequence));
        Assert.Equal(clients * perClient, messages.Select(m => m.ExternalId).Distinct().Count());
        // Each pair (original, retry) agrees on the stored message.
        Assert.All(all.GroupBy(r => r.ExternalId), g => Assert.Single(g.Select(r => r.Sequence).Distinct()));
        Assert.Equal(clients * perClient, all.Count(r => !r.Duplicate));
        Assert.Equal(clients * perClient, await app.CountEvents(c.Id, "message_appended"));
    }

    private static async Task<List<MessageDto>> ReadAllMessages(HttpClient client, Guid id)
    {
        var page = await (await client.GetAsync($"/api/conversations/{id}/messages?limit=500")).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Null(page.NextCursor);
        return page.Items;
    }
}
