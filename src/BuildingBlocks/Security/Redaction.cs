using System.Text;
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

    /// <summary>
    /// A provider's key with the credentials it carries (<see cref="WithCredentialParts(IEnumerable{string})"/>); none for no key
    /// (null or empty: the provider is called without one).
    /// </summary>
    public static IReadOnlyList<string> WithCredentialParts(string? key)
        => WithCredentialParts(key is { Length: > 0 } ? [key] : []);

    /// <summary>
    /// <paramref name="secrets"/> with the credentials they carry. A header value written <c>scheme credentials</c>
    /// (<c>Bearer TOKEN</c>, <c>Token TOKEN</c>, <c>Basic ...</c>) is sent whole, but a server that repeats it rarely quotes it
    /// whole ("authenticated with token TOKEN", "Token TOKEN has expired"): the credentials after the scheme are a secret of
    /// their own, and for <c>Basic</c> also the <c>user:password</c> they encode and the password alone. A part shorter than
    /// <see cref="MinPartLength"/> is left out: masked wherever it occurs, a short password would mask ordinary words.
    /// </summary>
    public static IReadOnlyList<string> WithCredentialParts(IEnumerable<string> secrets)
    {
        var all = new List<string>();
        foreach (var secret in secrets)
        {
            all.Add(secret);
            if (SchemeAndCredentials().Match(secret) is not { Success: true } match)
            {
                continue;
            }

            var credentials = match.Groups[2].Value;
            AddPart(credentials);
            if (match.Groups[1].Value.Equals("Basic", StringComparison.OrdinalIgnoreCase) && DecodedBasic(credentials) is { } userPassword)
            {
                AddPart(userPassword);
                AddPart(userPassword[(userPassword.IndexOf(':', StringComparison.Ordinal) + 1)..]);
            }
        }

        return all.Distinct(StringComparer.Ordinal).ToList();

        void AddPart(string part)
        {
            if (part.Length >= MinPartLength)
            {
                all.Add(part);
            }
        }
    }

    /// <summary>The <c>user:password</c> of Basic credentials; null when they are not Base64 of UTF-8 text with a colon.</summary>
    private static string? DecodedBasic(string credentials)
    {
        var bytes = new byte[credentials.Length];
        if (!Convert.TryFromBase64String(credentials, bytes, out var written))
        {
            return null;
        }

        try
        {
            var text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes, 0, written);
            return text.Contains(':', StringComparison.Ordinal) && !text.Any(char.IsControl) ? text : null;
        }
        catch (DecoderFallbackException)
        {
            return null;
        }
    }

    /// <summary>Shorter secrets are not looked for: they would mask ordinary words.</summary>
    private const int MinLength = 4;

    /// <summary>
    /// The shortest part of a secret (<see cref="WithCredentialParts(IEnumerable{string})"/>) looked for on its own: as long as the shortest token
    /// the general scrubbing takes for one after <c>Bearer</c>.
    /// </summary>
    private const int MinPartLength = 6;

    private static List<string> Scrubbed(IEnumerable<string?>? secrets)
        => (secrets ?? []).OfType<string>().Where(s => s.Length >= MinLength).Distinct(StringComparer.Ordinal).OrderByDescending(s => s.Length).ToList();

    /// <summary>One word (the scheme), white space, then the credentials (trimmed): as an Authorization header is written.</summary>
    [GeneratedRegex(@"^\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*) +(\S(?:.*\S)?)\s*$", RegexOptions.Singleline)]
    private static partial Regex SchemeAndCredentials();

    [GeneratedRegex(@"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}")]
    private static partial Regex Bearer();

    [GeneratedRegex(@"\bsk-[A-Za-z0-9_\-]{6,}")]
    private static partial Regex OpenAiKey();

    [GeneratedRegex(@"(?i)\b((?:x-)?(?:api[-_]?key|authorization|auth[-_]?token|access[-_]?token|token|secret|password|cookie))(""?\s*[:=]\s*""?)(?!\*\*\*)[^\s""',;}]+")]
    private static partial Regex Credential();
}
