using FluentValidation;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Security;

namespace ModularChat.Providers.Secrets;

/// <summary>
/// The key ring that encrypts stored secrets (section <c>DataProtection</c>). ASP.NET Core Data Protection keeps
/// versioned keys in PostgreSQL; each key is itself encrypted with <see cref="MasterKey"/> before it is stored.
/// </summary>
public sealed class DataProtectionSettings
{
    public const string Section = "DataProtection";

    /// <summary>
    /// 32 random bytes, base64 (<c>head -c 32 /dev/urandom | base64</c>), from configuration or the environment
    /// (<c>DataProtection__MasterKey</c>). Required outside Development.
    /// </summary>
    public string? MasterKey { get; set; }

    /// <summary>Master keys replaced by <see cref="MasterKey"/>: still able to read keys stored under them.</summary>
    public List<string> PreviousMasterKeys { get; set; } = [];

    /// <summary>How long a data-protection key is the one new secrets are encrypted with before a new key replaces it.</summary>
    public TimeSpan KeyLifetime { get; set; } = TimeSpan.FromDays(90);

    internal byte[]? MasterKeyBytes() => Decode(MasterKey);

    internal IEnumerable<byte[]> PreviousMasterKeyBytes() => PreviousMasterKeys.Select(Decode).OfType<byte[]>();

    internal static byte[]? Decode(string? key)
    {
        if (string.IsNullOrWhiteSpace(key))
        {
            return null;
        }

        var buffer = new byte[key.Length];
        return Convert.TryFromBase64String(key.Trim(), buffer, out var written) && written == 32 ? buffer[..written] : null;
    }
}

internal sealed class DataProtectionSettingsValidator : AbstractValidator<DataProtectionSettings>
{
    public DataProtectionSettingsValidator()
    {
        // Never echo a key in the message: a failed start prints it.
        RuleFor(o => o.MasterKey)
            .Must(k => string.IsNullOrWhiteSpace(k) || DataProtectionSettings.Decode(k) is not null)
            .WithMessage("must be 32 random bytes in base64 (head -c 32 /dev/urandom | base64)");
        RuleForEach(o => o.PreviousMasterKeys)
            .Must(k => DataProtectionSettings.Decode(k) is not null)
            .WithMessage("must each be 32 bytes in base64");
        RuleFor(o => o.KeyLifetime).InclusiveBetween(TimeSpan.FromDays(1), TimeSpan.FromDays(3650));
    }
}

/// <summary>
/// Outside Development, the service refuses to start without a master key (stored keys would be readable by anyone who
/// reads the database), or with the one published in docker-compose.yml (<see cref="PublishedKeys"/>).
/// </summary>
internal sealed class MasterKeyRequired(IHostEnvironment environment) : IValidateOptions<DataProtectionSettings>
{
    public ValidateOptionsResult Validate(string? name, DataProtectionSettings options)
        => environment.IsDevelopment()
            ? ValidateOptionsResult.Success
            : PublishedKeys.IsPublished(options.MasterKey)
            ? ValidateOptionsResult.Fail(PublishedKeys.Refusal($"{DataProtectionSettings.Section}:MasterKey", environment.EnvironmentName))
            : !string.IsNullOrWhiteSpace(options.MasterKey)
            ? ValidateOptionsResult.Success
            : ValidateOptionsResult.Fail(
                $"Configuration '{DataProtectionSettings.Section}:MasterKey' is required outside Development (environment '{environment.EnvironmentName}'): " +
                "it encrypts the key ring that protects provider API keys and MCP secrets. Set DataProtection__MasterKey to 32 random bytes in base64 " +
                "(head -c 32 /dev/urandom | base64); ./build.sh run provides a development key.");
}
