using System.Globalization;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using ModularChat.BuildingBlocks.Options;

namespace ModularChat.Host.Infrastructure;

/// <summary>Request limits enforced by the web server (section <c>Limits</c>).</summary>
public sealed class HostLimits
{
    public const string Section = "Limits";

    /// <summary>The smallest <see cref="MaxRequestBodyBytes"/> accepted: below it not even a short message fits.</summary>
    public const long MinRequestBodyBytes = 1024;

    /// <summary>The largest <see cref="MaxRequestBodyBytes"/> accepted (1 GiB): a body is read into memory.</summary>
    public const long MaxRequestBodyBytesLimit = 1024L * 1024 * 1024;

    /// <summary>Largest request body accepted; larger ones get a 413 ProblemDetails. Default 16 MiB.</summary>
    public long MaxRequestBodyBytes { get; set; } = 16 * 1024 * 1024;

    /// <summary>The smallest <see cref="MaxRequestLineBytes"/> accepted: Kestrel's own default.</summary>
    public const int MinRequestLineBytes = 8 * 1024;

    /// <summary>The largest <see cref="MaxRequestLineBytes"/> accepted (1 MiB).</summary>
    public const int MaxRequestLineBytesLimit = 1024 * 1024;

    /// <summary>
    /// Longest request line (method, path and query string as sent, percent-encoded) the web server accepts; a longer
    /// one gets the server's bare 414, before the service sees it. Default 64 KiB. Kestrel's own 8 KiB turned away
    /// queries inside the service's limits: percent-encoded, a character of Chinese or Japanese text takes 9 bytes, so a
    /// search's <c>q</c> of 1,000 such characters (<c>Search:MaxQueryLength</c>) or a context's <c>query</c> of 2,000 took
    /// 9-18 KB. For HTTP/2 the same length is allowed for the <c>:path</c> header.
    /// </summary>
    public int MaxRequestLineBytes { get; set; } = 64 * 1024;

    /// <summary>
    /// Whether API requests answer 503 at once, untried, while PostgreSQL takes connections but does not answer the node's
    /// check in time (<see cref="DatabaseAwayGate"/>). Default true.
    /// </summary>
    public bool RefuseRequestsWhileDatabaseAway { get; set; } = true;

    /// <summary>
    /// The limits from <paramref name="configuration"/>. They are read before the service container exists (the web
    /// server is configured with them), so they are checked here rather than by the options validation at start, with
    /// a message as clear: a bad value stops the start naming the setting.
    /// </summary>
    public static HostLimits From(IConfiguration configuration)
    {
        HostLimits limits;
        try
        {
            limits = configuration.GetSection(Section).Get<HostLimits>() ?? new HostLimits();
        }
        catch (InvalidOperationException e)
        {
            if (configuration[$"{Section}:{nameof(RefuseRequestsWhileDatabaseAway)}"] is { } refuse && !bool.TryParse(refuse, out _))
            {
                throw new StartRefusedException(
                    $"Configuration '{Section}:{nameof(RefuseRequestsWhileDatabaseAway)}' must be true or false (was '{refuse}').", e);
            }

            var setting = configuration[$"{Section}:{nameof(MaxRequestLineBytes)}"] is { } line
                          && !int.TryParse(line, NumberStyles.Integer, CultureInfo.InvariantCulture, out _)
                ? nameof(MaxRequestLineBytes)
                : nameof(MaxRequestBodyBytes);
            throw new StartRefusedException(
                $"Configuration '{Section}:{setting}' must be a whole number of bytes (was '{configuration[$"{Section}:{setting}"]}').", e);
        }

        if (limits.MaxRequestBodyBytes is < MinRequestBodyBytes or > MaxRequestBodyBytesLimit)
        {
            throw new StartRefusedException(string.Create(CultureInfo.InvariantCulture,
                $"Configuration '{Section}:{nameof(MaxRequestBodyBytes)}' must be between {MinRequestBodyBytes:N0} and {MaxRequestBodyBytesLimit:N0} bytes (was '{limits.MaxRequestBodyBytes}')."));
        }

        if (limits.MaxRequestLineBytes is < MinRequestLineBytes or > MaxRequestLineBytesLimit)
        {
            throw new StartRefusedException(string.Create(CultureInfo.InvariantCulture,
                $"Configuration '{Section}:{nameof(MaxRequestLineBytes)}' must be between {MinRequestLineBytes:N0} and {MaxRequestLineBytesLimit:N0} bytes (was '{limits.MaxRequestLineBytes}')."));
        }

        return limits;
    }

    /// <summary>Applies the limits to Kestrel.</summary>
    public void ApplyTo(KestrelServerLimits kestrel)
    {
        kestrel.MaxRequestBodySize = MaxRequestBodyBytes;
        kestrel.MaxRequestLineSize = MaxRequestLineBytes;

        // HTTP/2 carries the path and query in a header field (":path"), counted in the headers' total too.
        kestrel.Http2.MaxRequestHeaderFieldSize = Math.Max(kestrel.Http2.MaxRequestHeaderFieldSize, MaxRequestLineBytes);
        kestrel.MaxRequestHeadersTotalSize = Math.Max(kestrel.MaxRequestHeadersTotalSize, MaxRequestLineBytes + 32 * 1024);
    }
}
