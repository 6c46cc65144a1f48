using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace ModularChat.BuildingBlocks.Security;

/// <summary>
/// Removes secrets from texts that come from outside (provider error messages, MCP errors, exception messages)
/// before they reach a log, a trace or a response: the known secrets themselves, and anything shaped like a
/// credential (bearer tokens, sk- keys, "api-key: ..." pairs), since a proxy may echo a header we did not send.
/// </summary>
public static partial class Redaction
{
    public const string Mask = "***";

    public static string Scrub(string? text, IEnumerable<string?>? secrets = null)
    {
        if (string.IsNullOrEmpty(text))
        {
            return text ?? "";
        }

        // Longest first: a secret that holds another (a token and the header that carries it) would otherwise lose only
        // the shorter one's part, and the rest of it stay.
        foreach (var secret in Scrubbed(secrets))
        {
            text = text.Replace(secret, Mask, StringComparison.Ordinal);
        }

        text = Bearer().Replace(text, "$1 " + Mask);
        text = OpenAiKey().Replace(text, "sk-" + Mask);
        return Credential().Replace(text, "$1$2" + Mask);
    }

    /// <summary>
    /// Masks the given <paramref name="secrets"/> only, nothing else: for texts that are answers rather than errors (a tool's
    /// result), where masking everything credential-shaped would also mask ordinary words (<c>password: str</c> in code).
    /// A secret is also masked as JSON writes it inside a string (escaped), since such a text may be JSON that repeats it.
    /// </summary>
    public static string ScrubSecrets(string? text, IEnumerable<string?>? secrets)
    {
        if (string.IsNullOrEmpty(text))
        {
            return text ?? "";
        }

        var known = Scrubbed(secrets);
        var forms = known
            .Concat(known.Select(s => JsonEncodedText.Encode(s).Value))
            .Concat(known.Select(s => JsonEncodedText.Encode(s, JavaScriptEncoder.UnsafeRelaxedJsonEscaping).Value))
            .Distinct(StringComparer.Ordinal)
            .OrderByDescending(s => s.Length);
        foreach (var secret in forms)
        {
            text = text.Replace(secret, Mask, StringComparison.Ordinal);
        }

        return text;
    }

    /// <summary>
    /// <see cref="Scrub"/> for a text that was cut from a longer one before it could be scrubbed (read with a bound): a
    /// secret that ran on past the cut ends the text with its first characters, which are masked too.
    /// </summary>
    public static string ScrubCut(string? text, IEnumerable<string?>? secrets = null)
    {
        var known = Scrubbed(secrets);
        text = Scrub(text, known);
        foreach (var secret in known)
        {
            for (var kept = Math.Min(secret.Length - 1, text.Length); kept >= MinLength; kept--)
            {
                if (text.AsSpan().EndsWith(secret.AsSpan(0, kept), StringComparison.Ordinal))
                {
                    text = text[..^kept] + Mask;
                    break;
                }
            }
        }

        return text;
    }

    /// <summary>Shorter secrets are not looked for: they would mask ordinary words.</summary>
    private const int MinLength = 4;

    private static List<string> Scrubbed(IEnumerable<string?>? secrets)
        => (secrets ?? []).OfType<string>().Where(s => s.Length >= MinLength).Distinct(StringComparer.Ordinal).OrderByDescending(s => s.Length).ToList();

    [GeneratedRegex(@"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}")]
    private static partial Regex Bearer();

    [GeneratedRegex(@"\bsk-[A-Za-z0-9_\-]{6,}")]
    private static partial Regex OpenAiKey();

    [GeneratedRegex(@"(?i)\b((?:x-)?(?:api[-_]?key|authorization|auth[-_]?token|access[-_]?token|token|secret|password|cookie))(""?\s*[:=]\s*""?)(?!\*\*\*)[^\s""',;}]+")]
    private static partial Regex Credential();
}
