using System.Globalization;

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
            throw new InvalidOperationException(
                $"Configuration '{Section}:{nameof(MaxRequestBodyBytes)}' must be a whole number of bytes (was '{configuration[$"{Section}:{nameof(MaxRequestBodyBytes)}"]}').", e);
        }

        if (limits.MaxRequestBodyBytes is < MinRequestBodyBytes or > MaxRequestBodyBytesLimit)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                $"Configuration '{Section}:{nameof(MaxRequestBodyBytes)}' must be between {MinRequestBodyBytes:N0} and {MaxRequestBodyBytesLimit:N0} bytes (was '{limits.MaxRequestBodyBytes}')."));
        }

        return limits;
    }
}
