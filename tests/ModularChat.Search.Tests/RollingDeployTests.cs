using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>
/// A rolling deploy: nodes of one cluster (host processes, leader election and agent assignment as in production) are
/// started and stopped one after the other, so the search projection moves from node to node. It must run on exactly
/// one node at a time (two daemons on one database stop each other's indexing) and never stop for good.
/// </summary>
[Collection(ProcessesCollection.Name)]
public sealed class RollingDeployTests(SearchProcessesApp app)
{
    [Fact]
    public async Task Search_indexing_follows_the_projection_from_node_to_node_as_each_is_replaced()
    {
        var token = app.Token(ModularChatApp.NewUser("rolling"));
        var outputs = new List<string>();
        var running = await app.StartHostProcessAsync(FastCluster());
        try
        {
            using var client = running.Client(token);
            var conversation = await client.StartConversation("rolling", Message("the first watch began at dusk"));
            await Eventually.Until(() => client.KeywordMatches("dusk"), n => n == 1, seconds: 90, what: "The first node did not index");

            foreach (var word in new[] { "harbour", "lantern", "compass" })
            {
                // The next version starts beside the running one, then the running one is stopped as a deploy would (SIGTERM).
                var next = await app.StartHostProcessAsync(FastCluster());
                var stopping = running;
                running = next;
                stopping.Terminate();
                Assert.Equal(0, await stopping.WaitForExitAsync(TimeSpan.FromMinutes(1)));
                outputs.Add(stopping.Output);
                await stopping.DisposeAsync();

                using var nextClient = next.Client(token);
                (await nextClient.PostJson($"/api/conversations/{conversation}/messages", new { role = "user", content = $"the {word} of the watch" }))
                    .EnsureSuccessStatusCode();
                await Eventually.Until(() => nextClient.KeywordMatches(word), n => n == 1, seconds: 90, what: $"Nothing indexed '{word}' after the deploy");
            }

            using var last = running.Client(token);
            Assert.Equal(1, await last.KeywordMatches("dusk"));
            outputs.Add(running.Output);
        }
        finally
        {
            await running.DisposeAsync();
        }

        Assert.All(outputs, output => Assert.DoesNotContain("ProgressionProgressOutOfOrderException", output, StringComparison.Ordinal));
    }
}
