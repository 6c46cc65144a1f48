using ModularChat.BuildingBlocks.Security;

namespace ModularChat.Providers.Tests;

public sealed class RedactionTests
{
    [Fact]
    public void A_secret_that_holds_another_is_masked_whole_whatever_order_they_come_in()
    {
        // An MCP server's token, and a header value that carries it (the order of a server's secrets is its own).
        string[] secrets = ["tok_1234", "Key tok_1234567890abcdef"];
        const string echoed = "upstream refused the header X-Upstream: Key tok_1234567890abcdef (and X-Token tok_1234)";

        foreach (var order in new[] { secrets, secrets.Reverse().ToArray() })
        {
            var scrubbed = Redaction.Scrub(echoed, order);

            Assert.Equal("upstream refused the header X-Upstream: *** (and X-Token ***)", scrubbed);
        }
    }

    [Theory]
    [InlineData("config GH=ghp_Zq8Rw2", "config GH=***")] // the first 8 characters, before the cut
    [InlineData("config GH=ghp_", "config GH=***")]
    [InlineData("config GH=ghp", "config GH=ghp")] // under 4 characters, as whole secrets under 4 are not looked for
    [InlineData("ghp_Zq8Rw2Lm5Nx7 again: ghp_Zq8R", "*** again: ***")]
    [InlineData("config GH=ghp_Zq8Rw2 and more", "config GH=ghp_Zq8Rw2 and more")] // not where the text was cut: no secret there
    public void A_text_cut_before_it_was_scrubbed_loses_the_part_of_a_secret_that_ran_past_the_cut(string cut, string expected)
        => Assert.Equal(expected, Redaction.ScrubCut(cut, ["ghp_Zq8Rw2Lm5Nx7"]));
}
