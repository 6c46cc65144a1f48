using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>A host whose database no asynchronous daemon serves: the search projection never reads an event.</summary>
public sealed class NoDaemonSearchApp() : ModularChatApp(TestDatabase("search_no_daemon"))
{
    protected override bool RunsAsyncProjections => false;
}

/// <summary>The search status says whether the search projection has read what was appended, not only the embedding queue.</summary>
public sealed class IndexingStatusTests(NoDaemonSearchApp app) : IClassFixture<NoDaemonSearchApp>
{
    [Fact]
    public async Task While_the_search_projection_has_not_read_the_appended_messages_the_status_is_not_up_to_date()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("unread", Message("nobody indexes this"), Message("nor this", "assistant"));

        var status = await client.SearchStatus();

        Assert.Equal(0, status.Entries);
        Assert.Equal(0, status.Pending); // the embedding queue knows nothing of them yet
        Assert.True(status.IndexingLag >= 2, $"lag {status.IndexingLag}");
        Assert.False(status.UpToDate);
    }

    [Fact]
    public async Task Another_tenants_unread_events_do_not_count_in_the_callers_lag_and_its_own_do()
    {
        using var quiet = app.Client(ModularChatApp.NewUser("quiet"));
        using var importer = app.Client(ModularChatApp.NewUser("importer"));
        var mine = await quiet.StartConversation("mine", Message("nobody indexes this"));
        var before = await quiet.SearchStatus();

        await importer.StartConversation("history", [.. Enumerable.Range(0, 40).Select(i => Message($"imported turn {i}"))]);
        var whileImporting = await quiet.SearchStatus();
        await (await quiet.PostJson($"/api/conversations/{mine}/messages", Message("nor this"))).ReadAs<System.Text.Json.JsonElement>(System.Net.HttpStatusCode.Created);
        var afterOwnAppend = await quiet.SearchStatus();

        Assert.True(before.IndexingLag >= 2, $"lag {before.IndexingLag}"); // the conversation's start and its message
        Assert.Equal(before.IndexingLag, whileImporting.IndexingLag);
        Assert.Equal(before.IndexingLag + 1, afterOwnAppend.IndexingLag);
        Assert.False(afterOwnAppend.UpToDate);
        Assert.True((await importer.SearchStatus()).IndexingLag >= 40);
    }
}

/// <summary>The status of a node whose daemon runs: up to date once the projection has caught up.</summary>
[Collection(AppCollection.Name)]
public sealed class CaughtUpStatusTests(SearchApp app)
{
    [Fact]
    public async Task Once_the_search_projection_has_caught_up_the_status_is_up_to_date()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("read", Message("indexed soon"), Message("this too", "assistant"));

        var status = await Eventually.Until(client.SearchStatus, s => s.UpToDate, seconds: 60, what: "The status never said it was up to date");

        Assert.Equal(2, status.Entries);
        Assert.Equal(0, status.IndexingLag);
        Assert.Equal(0, status.Pending);
    }
}
