namespace ModularChat.Host.Infrastructure;

/// <summary>Request limits enforced by the web server (section <c>Limits</c>).</summary>
public sealed class HostLimits
{
    public const string Section = "Limits";

    /// <summary>Largest request body accepted; larger ones get a 413 ProblemDetails. Default 16 MiB.</summary>
    public long MaxRequestBodyBytes { get; set; } = 16 * 1024 * 1024;
}
