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

        foreach (var secret in secrets ?? [])
        {
            if (!string.IsNullOrEmpty(secret) && secret.Length >= 4)
            {
                text = text.Replace(secret, Mask, StringComparison.Ordinal);
            }
        }

        text = Bearer().Replace(text, "$1 " + Mask);
        text = OpenAiKey().Replace(text, "sk-" + Mask);
        return Credential().Replace(text, "$1$2" + Mask);
    }

    [GeneratedRegex(@"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}")]
    private static partial Regex Bearer();

    [GeneratedRegex(@"\bsk-[A-Za-z0-9_\-]{6,}")]
    private static partial Regex OpenAiKey();

    [GeneratedRegex(@"(?i)\b((?:x-)?(?:api[-_]?key|authorization|auth[-_]?token|access[-_]?token|token|secret|password|cookie))(""?\s*[:=]\s*""?)(?!\*\*\*)[^\s""',;}]+")]
    private static partial Regex Credential();
}
