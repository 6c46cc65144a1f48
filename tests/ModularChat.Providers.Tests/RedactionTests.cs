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

    [Fact]
    public void A_result_loses_the_secrets_it_repeats_also_as_json_escapes_them_and_keeps_what_only_looks_like_a_credential()
    {
        const string text = """
            def login(password: str, token = None): ...
            X-Api-Key: k+ey<9f3c2a
            {"X-Api-Key":"k\u002Bey\u003C9f3c2a"}
            """;

        Assert.Equal("""
            def login(password: str, token = None): ...
            X-Api-Key: ***
            {"X-Api-Key":"***"}
            """, Redaction.ScrubSecrets(text, ["k+ey<9f3c2a"]));
    }
}
