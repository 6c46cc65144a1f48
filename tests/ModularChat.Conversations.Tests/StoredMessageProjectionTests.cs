using System.Net;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// <see cref="StoredMessageProjection"/> writes the messages of a transaction with one set-based statement of its own:
/// the rows must be the documents Marten itself would write, and replaying the events (a rebuild) must write them again.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class StoredMessageProjectionTests(ConversationsApp app)
{
    private IDocumentStore Store => app.Host.Services.GetRequiredService<IDocumentStore>();

    [Fact]
    public async Task Each_message_is_the_document_of_its_event_as_Marten_stores_it()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        var conversation = await client.NewConversation();
        await (await client.PostJson($"/api/conversations/{conversation.Id}/messages/batch", new
        {
            messages = new object[]
            {
                new { role = "user", content = "Where do we meet?", externalId = "p-1", metadata = new { speaker = "Ana", lang = "en" }, createdAt = "2024-05-01T10:00:00Z" },
                new { role = "assistant", content = "At the station, \"platform 4\" \u00e9t\u00e9 \u2013 at noon." },
                new { role = "tool", content = "{\"ok\":true}", externalId = "p-3" },
            },
        })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        await (await client.PostJson($"/api/conversations/{conversation.Id}/messages", new { role = "user", content = "see you", externalId = "p-4" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        await using var session = Store.LightweightSession(user);
        var serializer = Store.Options.Serializer();
        var events = await session.Events.FetchStreamAsync(conversation.Id);
        var expected = events.Select(e => e.Data).OfType<MessageAppended>().Select(StoredMessage.From).ToList();
        var loaded = await session.Query<StoredMessage>().Where(m => m.ConversationId == conversation.Id).OrderBy(m => m.Sequence).ToListAsync();
        Assert.Equal(4, expected.Count);
        Assert.Equal(expected.Select(serializer.ToJson), loaded.Select(serializer.ToJson));
        Assert.Equal("Ana", loaded[0].Metadata!["speaker"]);

        // The same document stored by Marten (under another id and conversation): the same row but for those two.
        var copy = expected[0] with { Id = Guid.NewGuid(), ConversationId = Guid.NewGuid() };
        session.Store(copy);
        await session.SaveChangesAsync();
        var rows = await RowsAsync(user, "id = any(@ids)", [expected[0].Id, copy.Id]);
        Assert.Equal(2, rows.Count);
        Assert.Equal(rows[expected[0].Id] with { ConversationId = copy.ConversationId }, rows[copy.Id]);

        session.Delete<StoredMessage>(copy.Id);
        await session.SaveChangesAsync();
    }

    [Fact]
    public async Task Replaying_the_events_as_a_rebuild_does_writes_the_same_rows_again()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        foreach (var title in new[] { "one", "two" })
        {
            var conversation = await client.NewConversation(title);
            await (await client.PostJson($"/api/conversations/{conversation.Id}/messages/batch", new
            {
                messages = Enumerable.Range(1, 30).Select(i => new { role = i % 2 == 0 ? "assistant" : "user", content = $"{title} line {i}", externalId = i % 3 == 0 ? null : $"{title}-{i}" }),
            })).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        }

        var gone = await client.NewConversation("gone");
        await client.PostJson($"/api/conversations/{gone.Id}/messages", new { role = "user", content = "soon deleted" });
        (await client.DeleteAsync($"/api/conversations/{gone.Id}")).EnsureSuccessStatusCode();
        var before = await RowsAsync(user, "true", []);
        Assert.Equal(60, before.Count);

        // A rebuild empties the table and hands the projection every event in order, page by page. Only this tenant's
        // rows and events here: rebuilding the whole store would rewrite other tests' rows while their background work runs.
        await using (var session = Store.LightweightSession(user))
        {
            session.HardDeleteWhere<StoredMessage>(m => true);
            await session.SaveChangesAsync();
            Assert.Empty(await RowsAsync(user, "true", []));
            var events = await session.Events.QueryAllRawEvents().OrderBy(e => e.Sequence).ToListAsync();
            var projection = new StoredMessageProjection(Store.Options.DatabaseSchemaName);
            foreach (var page in events.Chunk(25))
            {
                await projection.ApplyAsync(session, page, CancellationToken.None);
                await session.SaveChangesAsync();
            }
        }

        var after = await RowsAsync(user, "true", []);
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        foreach (var (id, row) in before)
        {
            Assert.Equal(row, after[id]);
        }
    }

    /// <summary>The stored columns of the tenant's messages (all but the version and timestamp Marten sets per write).</summary>
    private async Task<Dictionary<Guid, Row>> RowsAsync(string tenant, string where, Guid[] ids)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            $"""
            select id, (data - 'Id' - 'ConversationId')::text, mt_dotnet_type, conversation_id, sequence, external_id
            from modularchat.mt_doc_storedmessage where tenant_id = @tenant and {where}
            """, connection);
        command.Parameters.AddWithValue("tenant", tenant);
        command.Parameters.AddWithValue("ids", ids);
        var rows = new Dictionary<Guid, Row>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            rows[reader.GetGuid(0)] = new Row(reader.GetString(1), reader.GetString(2), reader.GetGuid(3), reader.GetInt64(4), reader.IsDBNull(5) ? null : reader.GetString(5));
        }

        return rows;
    }

    private sealed record Row(string Data, string DotnetType, Guid ConversationId, long Sequence, string? ExternalId);
}
