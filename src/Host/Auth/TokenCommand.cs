using JasperFx.CommandLine;
using Microsoft.Extensions.Options;

namespace ModularChat.Host.Auth;

public sealed class TokenInput : NetCoreInput
{
    [Description("Subject (user id) of the token")]
    public string SubFlag { get; set; } = "dev";

    [Description("Tenant claim; without it the subject is the tenant")]
    public string? TenantFlag { get; set; }

    [Description("Role claim(s), e.g. admin")]
    public List<string> RoleFlag { get; set; } = [];

    [Description("Lifetime in minutes (default 720)")]
    public int MinutesFlag { get; set; } = 720;
}

/// <summary><c>token --sub alice [--tenant t] [--role admin]</c>: prints a development token on its last line.</summary>
/// <remarks>
/// The command line gives a list flag the values of its last occurrence only, so <c>--role a --role b</c> would mean
/// <c>--role b</c>: <see cref="MergeRepeatedRoles"/> turns it into <c>--role a b</c> before the arguments are parsed.
/// </remarks>
[Description("Print a JWT signed with the local development key", Name = "token")]
public sealed class TokenCommand : JasperFxAsyncCommand<TokenInput>
{
    public override Task<bool> Execute(TokenInput input)
    {
        // A blank value would make a token without the claim (the subject then being the tenant), not one with a blank
        // claim, which the service refuses: say so rather than print a token for another tenant than asked.
        if (string.IsNullOrWhiteSpace(input.SubFlag) || input.TenantFlag is { } tenant && string.IsNullOrWhiteSpace(tenant))
        {
            Console.Error.WriteLine(string.IsNullOrWhiteSpace(input.SubFlag)
                ? "--sub needs a subject (user id)."
                : "--tenant needs a tenant id; leave the flag out to make the subject the tenant.");
            return Task.FromResult(false);
        }

        using var host = input.BuildHost();
        var options = host.Services.GetRequiredService<IOptions<AuthOptions>>().Value;
        if (options.SigningKeyBytes() is null)
        {
            Console.Error.WriteLine("Auth:SigningKey is not set. Run ./build.sh token ... (it provides the development key), or set Auth__SigningKey.");
            return Task.FromResult(false);
        }

        var token = DevelopmentTokens.Create(options, input.SubFlag, input.TenantFlag, input.RoleFlag, TimeSpan.FromMinutes(input.MinutesFlag));
        Console.Error.WriteLine($"sub={input.SubFlag} tenant={input.TenantFlag ?? input.SubFlag} roles=[{string.Join(',', input.RoleFlag)}] expires in {input.MinutesFlag} min");
        Console.WriteLine(token);
        return Task.FromResult(true);
    }

    /// <summary>
    /// For the <c>token</c> command, every value of every <c>--role</c> (or <c>-r</c>) flag, given once as
    /// <c>--role v1 v2 ...</c> at the end; other arguments, and other commands' arguments, as they were.
    /// </summary>
    public static string[] MergeRepeatedRoles(string[] args)
    {
        if (args.Length == 0 || !string.Equals(args[0], "token", StringComparison.OrdinalIgnoreCase))
        {
            return args;
        }

        var others = new List<string>();
        var roles = new List<string>();
        var flags = 0;
        for (var i = 0; i < args.Length; i++)
        {
            if (args[i] is "--role" or "-r")
            {
                flags++;
                while (i + 1 < args.Length && !args[i + 1].StartsWith('-'))
                {
                    roles.Add(args[++i]);
                }
            }
            else
            {
                others.Add(args[i]);
            }
        }

        return flags == 0 ? args : [.. others, "--role", .. roles];
    }
}
