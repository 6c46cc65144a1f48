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

    [Fact]
    public void The_credentials_after_a_scheme_are_secrets_of_their_own_and_for_basic_the_user_and_password_they_encode()
    {
        var basic = "Basic " + Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes("svc-user:pa55w0rd-x"));

        var secrets = Redaction.WithCredentialParts(["Bearer tok-7d1e4c9a", "Token abcdef123456", basic, "plain-secret-value"]);

        Assert.Equal(
            ["Bearer tok-7d1e4c9a", "tok-7d1e4c9a", "Token abcdef123456", "abcdef123456", basic, basic[6..], "svc-user:pa55w0rd-x", "pa55w0rd-x", "plain-secret-value"],
            secrets);
        Assert.Equal("Token *** has expired; login as *** (password ***)",
            Redaction.Scrub("Token tok-7d1e4c9a has expired; login as svc-user:pa55w0rd-x (password pa55w0rd-x)", secrets));
    }

    [Theory]
    // Credentials shorter than 6 characters, masked wherever they occur, would mask ordinary words.
    [InlineData("Bearer abc12", new[] { "Bearer abc12" })]
    [InlineData("Basic dTpwdw==", new[] { "Basic dTpwdw==", "dTpwdw==" })] // u:pw
    [InlineData("Basic not-base64!", new[] { "Basic not-base64!", "not-base64!" })] // nothing to decode
    public void Parts_shorter_than_six_characters_and_basic_credentials_that_do_not_decode_add_nothing_more(string value, string[] expected)
        => Assert.Equal(expected, Redaction.WithCredentialParts([value]));

    [Fact]
    public void A_model_servers_failure_loses_the_credentials_its_key_carries()
    {
        // Summaries:Llm and Search:Embeddings keys, as a tenant provider's: "Basic base64(user:password)" is quoted in parts.
        var credentials = Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes("alice:correct-horse-battery-42"));

        var failure = ModelFailures.Scrubbed("Basic " + credentials)(
            new InvalidOperationException($"user alice:correct-horse-battery-42 refused (credentials {credentials})"), CancellationToken.None);

        Assert.Equal("user *** refused (credentials ***)", failure!.Message);
    }
}
