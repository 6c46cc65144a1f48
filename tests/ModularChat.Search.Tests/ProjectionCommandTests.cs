using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>The command line's projection commands beside running nodes.</summary>
[Collection(AppCollection.Name)]
public sealed class ProjectionCommandTests(SearchApp app)
{
    [Fact]
    public async Task The_command_lines_rebuild_is_refused_while_nodes_run_and_their_indexing_goes_on()
    {
        // This fixture's node runs (and has written its row of the node list) on the database the command is given.
        var (exit, output) = await app.RunHostCommandAsync(null, "projections", "rebuild", "-p", "SearchEntries");

        // It used to rebuild beside the running node, whose search projection then stopped for good (out of order).
        Assert.True(exit == 1, output);
        Assert.Contains("node(s) of this deployment are running", output, StringComparison.Ordinal);
        Assert.Contains("POST /api/admin/search/rebuild", output, StringComparison.Ordinal);
        using var client = app.Client(ModularChatApp.NewUser("after-refused-rebuild"));
        await client.StartConversation("after", Message("the lighthouse keeper wound the clock"));
        await Eventually.Until(() => client.KeywordMatches("lighthouse"), n => n == 1, what: "The running node did not index after the refused rebuild");

        // Listing the projections writes nothing: it runs.
        var (listed, list) = await app.RunHostCommandAsync(null, "projections", "list");
        Assert.True(listed == 0, list);
        Assert.Contains("SearchEntries", list, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("resources", "clear")]
    [InlineData("resources", "--timeout", "60", "Teardown")]
    [InlineData("storage", "clear")]
    [InlineData("clear-handled")]
    public async Task Emptying_or_dropping_the_schema_is_refused_while_nodes_run_and_what_they_stored_stays(params string[] args)
    {
        using var client = app.Client(ModularChatApp.NewUser("before-refused-clear"));
        await client.StartConversation("kept", Message("the ferryman counted the oars"));
        await Eventually.Until(() => client.KeywordMatches("ferryman"), n => n == 1, what: "indexing");

        var (exit, output) = await app.RunHostCommandAsync(null, args);

        // It used to empty every table under the running node (every tenant's conversations, summaries, queued jobs).
        Assert.True(exit == 1, output);
        Assert.Contains("node(s) of this deployment are running", output, StringComparison.Ordinal);
        Assert.Contains("Stop the service first", output, StringComparison.Ordinal);
        Assert.Equal(1, await client.KeywordMatches("ferryman"));
        Assert.Single((await (await client.GetAsync("/api/conversations")).ReadAs<ConversationsPage>(System.Net.HttpStatusCode.OK)).Items);
    }

    [Fact]
    public async Task Describe_is_not_offered_because_it_prints_the_keys()
    {
        var (exit, output) = await app.RunHostCommandAsync(new Dictionary<string, string> { ["Summaries__Llm__ApiKey"] = "sk-describe-7c1e93" }, "describe");

        // It printed the whole configuration, keys and connection strings included, and then failed part way.
        Assert.True(exit == 1, output);
        Assert.Contains("'describe' is not offered", output, StringComparison.Ordinal);
        Assert.DoesNotContain("sk-describe-7c1e93", output, StringComparison.Ordinal);
        Assert.DoesNotContain(app.MasterKey[..16], output, StringComparison.Ordinal);
    }

    private sealed record ConversationsPage(List<object> Items);
}
