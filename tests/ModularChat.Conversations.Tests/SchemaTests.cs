using System.Net;
using System.Net.Http.Headers;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// The service creates its whole database schema when it starts (the SchemaApplied start check), so no request runs
/// DDL: a document type Marten only meets on first use would get its table created by that request, racing other
/// requests that meet it too, and failing outright where the service's database user may not change the schema.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class SchemaTests(ConversationsApp app)
{
    [Fact]
    public async Task A_node_started_on_an_empty_database_has_every_table_its_requests_use()
    {
        var name = $"mc_schema_{Guid.NewGuid():N}"[..24];
        var database = await TestInfrastructure.PostgresAsync(name);
        try
        {
            await using (var node = await app.StartHostAsync(new Dictionary<string, string?> { ["ConnectionStrings:Postgres"] = database }))
            {
                var before = await SchemaObjectsAsync(database);

                using var client = node.Server.CreateClient();
                client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser("schema"), null, "admin", "operator"));
                await UseTheEndpoints(client);

                Assert.Equal(before, await SchemaObjectsAsync(database));
            }
        }
        finally
        {
            // With force: whatever connection the stopped node or this test left in a pool is closed by the drop.
            await using var admin = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(database) { Database = "postgres", Pooling = false }.ConnectionString);
            await admin.OpenAsync();
            await admin.ExecuteAsync($"drop database if exists \"{name}\" with (force)");
        }
    }

    /// <summary>Reads and writes of every module, archive included, ending with the conversation's deletion.</summary>
    private static async Task UseTheEndpoints(HttpClient client)
    {
        var conversation = await client.NewConversation("schema");
        var messages = $"/api/conversations/{conversation.Id}/messages";
        await (await client.PostJson($"{messages}/batch", new { messages = new[] { new { role = "user", content = "one", externalId = "e1" } } }))
            .ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        await (await client.PostJson(messages, new { role = "assistant", content = "two" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        foreach (var read in new[]
                 {
                     "/api/conversations", $"/api/conversations/{conversation.Id}", $"{messages}?includeArchived=true",
                     $"{messages}?includeArchived=true&direction=backward", $"{messages}/1?includeArchived=true",
                     $"/api/conversations/{conversation.Id}/context?maxTokens=1000", $"/api/conversations/{conversation.Id}/retention",
                     $"/api/conversations/{conversation.Id}/related", $"/api/conversations/{conversation.Id}/summary",
                     $"/api/conversations/{conversation.Id}/summaries", "/api/search?q=one", "/api/search/status", "/api/providers",
                     "/api/mcp-servers", "/api/admin/retention", "/api/admin/summaries/failures", "/api/admin/summaries/sweep",
                     "/api/admin/nodes",
                 })
        {
            var status = (await client.GetAsync(read)).StatusCode;
            Assert.True(status is HttpStatusCode.OK or HttpStatusCode.NotFound, $"GET {read} answered {(int)status}");
        }

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/conversations/{conversation.Id}")).StatusCode);
    }

    /// <summary>The tables, indexes, sequences, views and functions of the service's schema.</summary>
    private static async Task<List<string>> SchemaObjectsAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            """
            select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'modularchat'
            union all
            select p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'modularchat'
            order by 1
            """, connection);
        return await command.ReadStringsAsync();
    }
}
