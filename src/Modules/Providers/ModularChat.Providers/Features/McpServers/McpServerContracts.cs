using System.Linq.Expressions;
using System.Text.Json;
using System.Text.RegularExpressions;
using FluentValidation;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Mcp;
using ModularChat.Providers.Network;

namespace ModularChat.Providers.Features.McpServers;

/// <summary>Body of <c>POST /api/mcp-servers</c>.</summary>
/// <param name="Name">Unique per tenant, compared after Unicode normalization with case folding (NFKC_Casefold); chat requests select servers by name.</param>
/// <param name="Transport"><c>stdio</c>, <c>sse</c> or <c>streamable-http</c>.</param>
/// <param name="Command">stdio: the program (must be on the service's allowlist; stdio is off unless the service enables it).</param>
/// <param name="Arguments">stdio: its arguments.</param>
/// <param name="Environment">stdio: environment variables. Names that look secret (…KEY, …TOKEN, …SECRET, …PASSWORD) are stored encrypted.</param>
/// <param name="SecretEnvironment">stdio: environment variables stored encrypted and never returned.</param>
/// <param name="Url">sse / streamable-http: the server's URL.</param>
/// <param name="Headers">HTTP headers. Authorization, cookies and names that look secret are stored encrypted.</param>
/// <param name="SecretHeaders">HTTP headers stored encrypted and never returned.</param>
public sealed record McpServerRequest(
    string? Name,
    string? Transport,
    string? Command,
    List<string>? Arguments,
    Dictionary<string, string>? Environment,
    Dictionary<string, string>? SecretEnvironment,
    string? Url,
    Dictionary<string, string>? Headers,
    Dictionary<string, string>? SecretHeaders)
{
    /// <summary>Never prints values.</summary>
    public override string ToString() => $"McpServerRequest {{ Name = {Name}, Transport = {Transport} }}";
}

/// <summary>A tool of an MCP server.</summary>
public sealed record McpToolResponse(string Name, string? Description, JsonElement InputSchema)
{
    internal static McpToolResponse From(McpToolInfo tool) => new(tool.Name, tool.Description, JsonDocument.Parse(tool.InputSchema).RootElement.Clone());
}

/// <summary>An MCP server as the API shows it: secret values only as masked hints.</summary>
/// <param name="Tools">The tools of the last successful test (null before the first).</param>
/// <param name="ListingFailedAt">When a chat turn last failed to list the server's tools (before any test listed them): turns leave it out for <c>Mcp:UnreachableRetryAfter</c>.</param>
public sealed record McpServerResponse(
    Guid Id,
    string Name,
    string Transport,
    string? Command,
    IReadOnlyList<string> Arguments,
    IReadOnlyDictionary<string, string> Environment,
    IReadOnlyDictionary<string, string> SecretEnvironment,
    string? Url,
    IReadOnlyDictionary<string, string> Headers,
    IReadOnlyDictionary<string, string> SecretHeaders,
    IReadOnlyList<McpToolResponse>? Tools,
    DateTimeOffset? ToolsRefreshedAt,
    string? ProtocolVersion,
    string? ServerName,
    DateTimeOffset CreatedAt,
    DateTimeOffset? ListingFailedAt)
{
    /// <summary>
    /// <paramref name="s"/> as the API shows it: its stored tools as they are read (<see cref="McpToolCatalog.Readable"/>,
    /// logged to <paramref name="logger"/>), without the server's secrets, which <paramref name="connector"/> decrypts.
    /// </summary>
    internal static McpServerResponse From(McpServerConnection s, McpConnector connector, ILogger logger) => new(
        s.Id, s.Name, s.Transport, s.Command, s.Arguments, s.Environment,
        s.SecretEnvironment.ToDictionary(e => e.Key, e => e.Value.Hint), s.Url, s.Headers,
        s.SecretHeaders.ToDictionary(h => h.Key, h => h.Value.Hint),
        s.Tools is null ? null : McpToolCatalog.Readable(s, s.Tools, connector.SecretValuesToScrub(s), logger).Select(McpToolResponse.From).ToList(),
        s.ToolsRefreshedAt, s.ProtocolVersion, s.ServerName, s.CreatedAt, s.ListingFailedAt);
}

internal static partial class McpServerRules
{
    /// <summary>Header and variable names whose values are kept secret even when sent as plain headers or environment.</summary>
    public static bool LooksSecret(string name)
        => SecretName().IsMatch(name) || name.Equals("cookie", StringComparison.OrdinalIgnoreCase);

    /// <summary>Headers the transport sets itself.</summary>
    public static readonly HashSet<string> ReservedHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        "host", "content-length", "content-type", "transfer-encoding", "connection", "mcp-session-id", "mcp-protocol-version", "accept", "last-event-id",
    };

    /// <summary>
    /// Headers of a body rather than of a request: HTTP clients keep them on the content, and a request header of that name
    /// is dropped without a word.
    /// </summary>
    public static bool IsContentHeader(string name)
        => name.StartsWith("content-", StringComparison.OrdinalIgnoreCase)
           || name.Equals("expires", StringComparison.OrdinalIgnoreCase)
           || name.Equals("last-modified", StringComparison.OrdinalIgnoreCase)
           || name.Equals("allow", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Variables a tenant may not give a stdio program: they change which code the program, its runtime, its package
    /// manager or a program it starts loads or runs (a preloaded library, a startup hook, a module path, a package index,
    /// a shell, an editor or pager, git's settings, a configuration file or directory of its choice), which would turn an
    /// allowlisted command into any program. A program that needs one gets it from a wrapper script the allowlist names.
    /// Names are compared ignoring case.
    /// </summary>
    public static bool ChangesWhatRuns(string name)
        => LoaderNames.Contains(name)
           || LoaderPrefixes.Any(p => name.StartsWith(p, StringComparison.OrdinalIgnoreCase))
           || LoaderSuffixes.Any(s => name.EndsWith(s, StringComparison.OrdinalIgnoreCase));

    private static readonly string[] LoaderPrefixes =
    [
        // The dynamic linker and the C library: preloaded libraries, audit modules, tunables.
        "LD_", "DYLD_", "GLIBC_", "MALLOC_",
        // .NET, Node.js and other JavaScript runtimes, their package managers and build tools.
        "DOTNET_", "CORECLR_", "COREHOST_", "COMPLUS_", "MSBUILD", "NUGET_",
        "NODE_", "NPM_CONFIG_", "YARN_", "PNPM_", "COREPACK_", "BUN_", "DENO_", "ELECTRON_",
        // Python and its package managers; Perl, Ruby, PHP, Lua, Tcl, R, Julia, Erlang, Guile.
        "PYTHON", "PIP_", "PIPX_", "UV_", "POETRY_", "CONDA", "PYENV",
        "PERL", "RUBY", "GEM_", "BUNDLE_", "RBENV_", "PHP", "COMPOSER_", "LUA_", "TCL", "R_LIBS", "R_PROFILE", "R_ENVIRON",
        "JULIA_", "ERL_", "GUILE_",
        // The JVM and its build tools; Go's, Rust's and C's toolchains.
        "JAVA_", "JDK_JAVA_", "MAVEN_", "GRADLE_", "SBT_", "ANT_", "CGO_", "CARGO_", "RUSTC", "RUSTUP_", "RUSTFLAGS", "RUSTDOCFLAGS",
        // Shells; git (its settings in variables: GIT_CONFIG_COUNT/KEY_n/VALUE_n, GIT_SSH_COMMAND, ...) and other version control.
        "BASH", "GIT_", "HGRC", "SVN_", "RSYNC_",
        // OpenSSL's configuration and modules; configuration directories; libraries' plugin paths.
        "OPENSSL_", "XDG_", "GTK_", "GST_", "GIO_", "QT_", "ODBC", "LIBGL_", "SANE_",
    ];

    private static readonly HashSet<string> LoaderNames = new(StringComparer.OrdinalIgnoreCase)
    {
        "PATH", "CLASSPATH", "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "GI_TYPELIB_PATH",
        // Shells: the one programs run commands with, their start-up files and prompts (expanded, so they run commands).
        "SHELL", "COMSPEC", "ENV", "SHELLOPTS", "ZDOTDIR", "PS0", "PS1", "PS2", "PS3", "PS4", "IFS", "CDPATH", "FPATH", "INPUTRC",
        // The home directory (and Windows' equivalents): where programs read their own settings, git's and ssh's among them.
        "HOME", "USERPROFILE", "APPDATA", "LOCALAPPDATA",
        // Programs that programs start: a browser, a terminal, an editor (VISUAL and FCEDIT; *EDITOR below), less's helpers.
        "BROWSER", "TERMINAL", "VISUAL", "FCEDIT", "LESS", "LESSOPEN", "LESSCLOSE", "LESSKEY", "LESSKEYIN", "LESSKEY_SYSTEM",
        "LESSKEYIN_SYSTEM", "LESSEDIT", "LESSSECURE", "MANOPT", "MANPATH", "MANROFFOPT",
        "EXINIT", "VIMINIT", "GVIMINIT", "MYVIMRC", "VIMRUNTIME", "EMACSLOADPATH",
        // Tools' options and configuration files that can name commands to run.
        "ZIPOPT", "UNZIP", "UNZIPOPT", "ZIPINFO", "ZIPINFOOPT", "WGETRC", "SYSTEM_WGETRC", "CURL_HOME", "CVS_RSH",
        "KUBECONFIG", "AWS_CONFIG_FILE", "DOCKER_CONFIG", "CLOUDSDK_CONFIG", "KRB5_CONFIG", "GNUPGHOME",
        "GOFLAGS", "GOENV", "GOROOT", "GOPATH", "GOBIN", "GOPROXY", "GONOPROXY", "GOPRIVATE", "GOSUMDB", "GONOSUMDB",
        "GONOSUMCHECK", "GOINSECURE", "GOTOOLCHAIN", "GOEXPERIMENT", "GOCACHE", "GOMODCACHE",
        "CC", "CXX", "CPP", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "VIRTUAL_ENV",
        // Not code, but it hands the program's TLS keys to a file of the tenant's choosing.
        "SSLKEYLOGFILE",
    };

    /// <summary>What many programs call the variable naming a program they start, or options that can name one.</summary>
    private static readonly string[] LoaderSuffixes =
    [
        "EDITOR", "PAGER", "ASKPASS", "_COMMAND", "_CMD", "_PROG", "_PROGRAM", "_EXECUTABLE", "_EXECUTABLE_PATH", "_BIN", "_BINARY",
        "_HOOK", "_HOOKS", "_OPTS", "_OPTIONS",
    ];

    /// <summary>
    /// Whether the operator lets tenants give stdio programs the variable <paramref name="name"/>: always when
    /// <paramref name="allowed"/> (<c>Mcp:Stdio:AllowedEnvironment</c>) is empty, else when it lists the name or a prefix of
    /// it ending in '*', compared exactly (a program sees <c>Foo</c> and <c>FOO</c> as two variables).
    /// </summary>
    public static bool AllowedByOperator(string name, IReadOnlyCollection<string> allowed)
        => allowed.Count == 0 || allowed.Any(a => a.EndsWith('*')
            ? name.StartsWith(a[..^1], StringComparison.Ordinal)
            : name.Equals(a, StringComparison.Ordinal));

    /// <summary>
    /// The first of <paramref name="names"/> a stdio program may not be given, and why: one that changes what runs (checked
    /// first: refused whatever the operator allows), else one <paramref name="allowed"/> does not list. Null when all may be.
    /// The same judgement when a server is stored and when it is run.
    /// </summary>
    public static (string Name, bool ChangesWhatRuns)? FirstRefused(IEnumerable<string> names, IReadOnlyCollection<string> allowed)
    {
        var list = names as IReadOnlyCollection<string> ?? names.ToList();
        return list.FirstOrDefault(ChangesWhatRuns) is { } loader ? (loader, true)
            : list.FirstOrDefault(n => !AllowedByOperator(n, allowed)) is { } other ? (other, false)
            : null;
    }

    /// <summary>What an entry of <c>Mcp:Stdio:AllowedEnvironment</c> looks like: a variable name, or its start followed by '*'.</summary>
    [GeneratedRegex(@"^[A-Za-z_][A-Za-z0-9_]*\*?$")]
    public static partial Regex AllowedEnvironmentEntry();

    [GeneratedRegex("(?i)(auth|key|token|secret|password|passwd|credential|session|signature)")]
    private static partial Regex SecretName();

    [GeneratedRegex(@"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")]
    public static partial Regex HeaderName();

    [GeneratedRegex(@"^[A-Za-z_][A-Za-z0-9_]*$")]
    public static partial Regex VariableName();
}

/// <summary>A command that carries an MCP server's settings (create, replace).</summary>
internal interface IMcpServerCommand
{
    McpServerRequest Body { get; }
}

internal sealed class CreateMcpServerValidator(IOptions<McpOptions> mcp, IOptions<ProvidersOptions> providers, OutboundNetwork network)
    : McpServerRequestValidator<CreateMcpServer>(mcp, providers, network);

internal sealed class UpdateMcpServerValidator(IOptions<McpOptions> mcp, IOptions<ProvidersOptions> providers, OutboundNetwork network)
    : McpServerRequestValidator<UpdateMcpServer>(mcp, providers, network);

/// <summary>The rules of an MCP server's settings, the same for a new server and a replaced one.</summary>
internal abstract class McpServerRequestValidator<T> : AbstractValidator<T>
    where T : IMcpServerCommand
{
    protected McpServerRequestValidator(IOptions<McpOptions> mcp, IOptions<ProvidersOptions> providers, OutboundNetwork network)
    {
        var o = mcp.Value;
        var maxName = providers.Value.MaxNameLength;
        RuleFor(r => r.Body.Name).Must(ProviderSettings.IsGiven).WithMessage("'name' is required (white space and invisible characters alone do not count).")
            .OverridePropertyName("name");
        RuleFor(r => r.Body.Name).Must(n => ProviderSettings.FitsLength(n, maxName))
            .WithMessage($"'name' may be at most {maxName} characters, also in the form names are compared in (some characters stand for several).").AsLimit().OverridePropertyName("name");
        RuleFor(r => r.Body.Name).Must(ProviderSettings.HasNoControlCharacters).OverridePropertyName("name")
            .WithMessage("'name' must not contain control characters (line breaks, tabs, ...).");
        RuleFor(r => r.Body.Transport).Must(t => McpTransports.All.Contains(t)).OverridePropertyName("transport")
            .WithMessage(r => $"'transport' must be one of {string.Join(", ", McpTransports.All)}" + (r.Body.Transport is null ? "." : $" (was '{r.Body.Transport}')."));

        When(r => r.Body.Transport == McpTransports.Stdio, () =>
        {
            RuleFor(r => r.Body.Transport).Must(_ => o.Stdio.Enabled).OverridePropertyName("transport")
                .WithMessage("'transport' stdio runs a program on this server and is disabled here (Mcp:Stdio:Enabled).");
            RuleFor(r => r.Body.Command).Must(c => !string.IsNullOrWhiteSpace(c)).OverridePropertyName("command")
                .WithMessage("'command' is required for the stdio transport.").When(_ => o.Stdio.Enabled);
            RuleFor(r => r.Body.Command).Must(c => o.Stdio.AllowedCommands.Contains(c!, StringComparer.Ordinal)).OverridePropertyName("command")
                .When(r => o.Stdio.Enabled && !string.IsNullOrWhiteSpace(r.Body.Command))
                .WithMessage("'command' is not on this server's allowlist of stdio commands (Mcp:Stdio:AllowedCommands).");
            RuleFor(r => r.Body.Arguments).Must(a => a is null || a.Count <= o.MaxArguments).OverridePropertyName("arguments")
                .WithMessage($"'arguments' may have at most {o.MaxArguments} entries.").AsLimit();
            RuleFor(r => r.Body.Arguments).Must(a => a is null || a.All(x => x is not null)).OverridePropertyName("arguments")
                .WithMessage("'arguments' must not contain null.");
            RuleFor(r => r.Body.Arguments).Must(a => a is null || a.All(x => x is null || x.Length <= o.MaxArgumentLength)).OverridePropertyName("arguments")
                .WithMessage($"'arguments' may each be at most {o.MaxArgumentLength} characters (Mcp:MaxArgumentLength).").AsLimit();
            RuleFor(r => r.Body).Must(b => Names(b.Environment, b.SecretEnvironment).Count() <= o.MaxEnvironmentVariables).OverridePropertyName("environment")
                .WithMessage($"'environment' and 'secretEnvironment' may have at most {o.MaxEnvironmentVariables} entries together (Mcp:MaxEnvironmentVariables).").AsLimit();
            EnvironmentRules(r => r.Body.Environment, "environment", o.MaxValueLength, o.Stdio);
            EnvironmentRules(r => r.Body.SecretEnvironment, "secretEnvironment", o.MaxValueLength, o.Stdio);
            RuleFor(r => r.Body.Url).Empty().OverridePropertyName("url").WithMessage("'url' is for the sse and streamable-http transports, not stdio.");
            // Settings of the other transports were dropped without a word; refused as 'url' is (empty ones are what a GET shows).
            RuleFor(r => r.Body.Headers).Must(h => h is not { Count: > 0 }).OverridePropertyName("headers")
                .WithMessage("'headers' are for the sse and streamable-http transports, not stdio.");
            RuleFor(r => r.Body.SecretHeaders).Must(h => h is not { Count: > 0 }).OverridePropertyName("secretHeaders")
                .WithMessage("'secretHeaders' are for the sse and streamable-http transports, not stdio.");
        });

        When(r => r.Body.Transport is McpTransports.Sse or McpTransports.StreamableHttp, () =>
        {
            RuleFor(r => r.Body.Url).Custom((url, context) =>
            {
                if (network.CheckNew(url, "url") is { } problem)
                {
                    context.AddFailure("url", problem);
                }
            });
            RuleFor(r => r.Body.Command).Empty().OverridePropertyName("command").WithMessage("'command' is for the stdio transport only.");
            // Were dropped without a word (and so never checked: any number of entries, any variable), while 'command' was refused.
            RuleFor(r => r.Body.Arguments).Must(a => a is not { Count: > 0 }).OverridePropertyName("arguments")
                .WithMessage("'arguments' are for the stdio transport only.");
            RuleFor(r => r.Body.Environment).Must(e => e is not { Count: > 0 }).OverridePropertyName("environment")
                .WithMessage("'environment' is for the stdio transport only.");
            RuleFor(r => r.Body.SecretEnvironment).Must(e => e is not { Count: > 0 }).OverridePropertyName("secretEnvironment")
                .WithMessage("'secretEnvironment' is for the stdio transport only.");
            RuleFor(r => r.Body).Must(b => Names(b.Headers, b.SecretHeaders).Count() <= o.MaxHeaders).OverridePropertyName("headers")
                .WithMessage($"'headers' may have at most {o.MaxHeaders} entries.").AsLimit();
            HeaderRules(r => r.Body.Headers, "headers", o.MaxValueLength);
            HeaderRules(r => r.Body.SecretHeaders, "secretHeaders", o.MaxValueLength);
            // Header names ignore case: two that differ only in it (or one in both dictionaries) would be one header, which
            // the connection could never send (it failed every test and was left out of every chat turn).
            RuleFor(r => r.Body).Custom((b, context) =>
            {
                var twice = Names(b.Headers, b.SecretHeaders).GroupBy(n => n, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1);
                if (twice is not null)
                {
                    // Named in secretHeaders only: that field's mistake; else 'headers' (both, or the plain ones).
                    var field = b.Headers?.Keys.Any(k => string.Equals(k, twice.Key, StringComparison.OrdinalIgnoreCase)) == true ? "headers" : "secretHeaders";
                    context.AddFailure(field,
                        $"'headers' and 'secretHeaders' name '{twice.Key}' more than once (header names ignore case): give each header once.");
                }
            });
        });
    }

    /// <summary>The rules of one dictionary of a stdio program's variables, its errors named by <paramref name="field"/>.</summary>
    private void EnvironmentRules(Expression<Func<T, Dictionary<string, string>?>> variables, string field, int maxValueLength, McpStdioOptions stdio)
    {
        RuleFor(variables).Must(e => Fits(e, maxValueLength)).OverridePropertyName(field)
            .WithMessage($"'{field}' names and values may be at most {maxValueLength} characters (Mcp:MaxValueLength).").AsLimit();
        RuleFor(variables).Must(e => Keys(e).All(n => McpServerRules.VariableName().IsMatch(n))).OverridePropertyName(field)
            .WithMessage($"'{field}' names must be letters, digits and underscores, not starting with a digit.");
        RuleFor(variables).Custom((e, context) =>
        {
            switch (McpServerRules.FirstRefused(Keys(e), stdio.AllowedEnvironment))
            {
                case ({ } name, true):
                    context.AddFailure(field,
                        $"'{field}' may not set {name}: it changes which code the program loads or which programs it runs (LD_*, DOTNET_*, " +
                        "NODE_*, PYTHON*, GIT_*, PATH, HOME, SHELL, editors, pagers, package indexes, ...). Set it in a wrapper script and " +
                        "allowlist that script instead.");
                    break;
                case ({ } other, false):
                    context.AddFailure(field,
                        $"'{field}' may not set {other}: stdio programs here may only be given {string.Join(", ", stdio.AllowedEnvironment)} " +
                        "(Mcp:Stdio:AllowedEnvironment; names compared exactly, '*' ends a prefix).");
                    break;
            }
        });
        RuleFor(variables).Must(e => e is null || e.Values.All(v => v is not null && !v.Contains('\0', StringComparison.Ordinal))).OverridePropertyName(field)
            .WithMessage($"'{field}' values must be strings without NUL characters.");
    }

    /// <summary>The rules of one dictionary of HTTP headers, its errors named by <paramref name="field"/>.</summary>
    private void HeaderRules(Expression<Func<T, Dictionary<string, string>?>> headers, string field, int maxValueLength)
    {
        RuleFor(headers).Must(h => Keys(h).All(n => McpServerRules.HeaderName().IsMatch(n))).OverridePropertyName(field)
            .WithMessage($"'{field}' names must be valid HTTP header names.");
        RuleFor(headers).Must(h => !Keys(h).Any(McpServerRules.ReservedHeaders.Contains)).OverridePropertyName(field)
            .WithMessage($"'{field}' must not set {string.Join(", ", McpServerRules.ReservedHeaders)}: the transport sets them.");
        // Content-Length and Content-Type are reserved above: one message for one header.
        RuleFor(headers).Must(h => !Keys(h).Any(n => McpServerRules.IsContentHeader(n) && !McpServerRules.ReservedHeaders.Contains(n)))
            .OverridePropertyName(field)
            .WithMessage($"'{field}' must not set the headers of a body (Content-*, Expires, Last-Modified, Allow): they describe what the transport sends.");
        RuleFor(headers).Must(h => h is null || h.Values.All(v => v is not null && !v.Any(char.IsControl))).OverridePropertyName(field)
            .WithMessage($"'{field}' values must be strings without control characters.");
        RuleFor(headers).Must(h => Fits(h, maxValueLength)).OverridePropertyName(field)
            .WithMessage($"'{field}' names and values may be at most {maxValueLength} characters (Mcp:MaxValueLength).").AsLimit();
        // HTTP headers carry ASCII only: any other value could never be sent.
        RuleFor(headers).Must(AsciiValues).OverridePropertyName(field)
            .WithMessage($"'{field}' values must hold ASCII characters only: HTTP headers carry nothing else.");
    }

    private static IEnumerable<string> Keys(Dictionary<string, string>? entries) => entries?.Keys ?? Enumerable.Empty<string>();

    private static bool Fits(Dictionary<string, string>? entries, int max)
        => entries is null || entries.All(e => e.Key.Length <= max && (e.Value is null || e.Value.Length <= max));

    private static bool AsciiValues(Dictionary<string, string>? entries)
        => entries is null || entries.Values.All(v => v is null || v.All(char.IsAscii));

    private static IEnumerable<string> Names(Dictionary<string, string>? plain, Dictionary<string, string>? secret) => Keys(plain).Concat(Keys(secret));
}
