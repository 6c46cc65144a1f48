using System.Net;
using FluentValidation;
using ModularChat.Providers.Features.McpServers;
using ModularChat.Providers.Network;

namespace ModularChat.Providers;

/// <summary>LLM provider settings handling (section <c>Providers</c>).</summary>
public sealed class ProvidersOptions
{
    public const string Section = "Providers";

    /// <summary>
    /// How long a tenant's provider settings (their keys encrypted as stored) stay in this process's memory. A change
    /// bumps the tenant's providers' cache generation, so every node reads them again at its next use; without Redis other
    /// nodes see a change when their copy expires, so keep this short.
    /// </summary>
    public TimeSpan CacheDuration { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long they stay in memory while the nodes do not share cache generations (Redis not configured, down or not
    /// answering), at most <see cref="CacheDuration"/>: then another node's change (a provider deleted, a key replaced or
    /// revoked) is seen here only when the copy expires, as contexts are kept only <c>Context:LocalOnlyExpiration</c>.
    /// </summary>
    public TimeSpan LocalOnlyCacheDuration { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Timeout of one model call (one request to the provider).</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(100);

    /// <summary>
    /// Retries of a model call on 429/5xx/network errors (the OpenAI client's backoff); never of a call that timed out
    /// (<see cref="RequestTimeout"/> is how long a caller waits, not how long each try may take).
    /// </summary>
    public int MaxRetries { get; set; } = 1;

    /// <summary>Timeout of <c>POST /api/providers/{id}/test</c>.</summary>
    public TimeSpan TestTimeout { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>What the provider test asks the model.</summary>
    public string TestPrompt { get; set; } = "Reply with the single word OK.";

    /// <summary>Most providers per tenant (422 beyond).</summary>
    public int MaxProvidersPerTenant { get; set; } = 20;

    public int MaxNameLength { get; set; } = 100;

    public int MaxModelLength { get; set; } = 200;

    public int MaxApiKeyLength { get; set; } = 4096;
}

internal sealed class ProvidersOptionsValidator : AbstractValidator<ProvidersOptions>
{
    public ProvidersOptionsValidator()
    {
        RuleFor(o => o.CacheDuration).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromHours(1));
        RuleFor(o => o.LocalOnlyCacheDuration).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromHours(1));
        RuleFor(o => o.RequestTimeout).InclusiveBetween(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(30));
        RuleFor(o => o.TestTimeout).InclusiveBetween(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(10));
        RuleFor(o => o.MaxRetries).InclusiveBetween(0, 10);
        RuleFor(o => o.TestPrompt).NotEmpty();
        RuleFor(o => o.MaxProvidersPerTenant).InclusiveBetween(1, 10_000);
        // Names are in a unique index with the tenant id: 400 four-byte characters and a 256-character tenant id still fit
        // PostgreSQL's ~2.7 kB btree rows (as Conversations:MaxExternalIdLength).
        RuleFor(o => o.MaxNameLength).InclusiveBetween(1, 400);
        RuleFor(o => o.MaxModelLength).InclusiveBetween(1, 1000);
        RuleFor(o => o.MaxApiKeyLength).InclusiveBetween(16, 100_000);
    }
}

/// <summary>Outbound connections to provider endpoints and MCP servers (section <c>OutboundNetwork</c>).</summary>
/// <remarks>
/// Provider endpoints and MCP URLs are chosen by tenants, so every connection is a possible server-side request
/// forgery. Unless allowed here, connections to loopback, private (RFC 1918, unique-local), link-local (cloud
/// metadata services) and other non-public addresses are refused, both when a URL is stored (literal addresses)
/// and when a connection is made (after DNS resolution, so a public name that resolves to a private address is
/// refused too).
/// </remarks>
public sealed class OutboundNetworkOptions
{
    public const string Section = "OutboundNetwork";

    /// <summary>Allow loopback and private-network targets (local Ollama, vLLM, LM Studio, in-house MCP servers, tests).</summary>
    public bool AllowPrivateNetworks { get; set; }

    /// <summary>Allow http:// URLs besides https:// (off in production unless the targets are trusted).</summary>
    public bool AllowHttp { get; set; } = true;

    /// <summary>
    /// Most bytes read of one response from a provider or MCP server (a larger one fails the call): a tenant's server
    /// cannot make this service read gigabytes into memory.
    /// </summary>
    public long MaxResponseBytes { get; set; } = 64L * 1024 * 1024;

    /// <summary>
    /// An HTTP proxy that outbound calls go through (<c>http://host:port</c>, with <c>user:password@</c> when it asks for
    /// credentials), for networks whose only way out is a proxy; read at start. Loopback targets are reached directly.
    /// The address rules still judge the server a tenant named, not the proxy: before each request its name is resolved
    /// here and every address must be public (a name that does not resolve here is refused), unless
    /// <see cref="AllowPrivateNetworks"/>, which leaves the judging to the proxy.
    /// </summary>
    public string? Proxy { get; set; }

    /// <summary>
    /// Targets reached without <see cref="Proxy"/>, as in <c>NO_PROXY</c>: host names (each with the names under it:
    /// <c>corp.example</c> or <c>.corp.example</c>), IP addresses and CIDR ranges, separated by commas. For in-house model
    /// and MCP servers the proxy does not reach (with <see cref="AllowPrivateNetworks"/>, for private addresses). Loopback
    /// targets are always reached directly. The address rules judge these connections as any other.
    /// </summary>
    public string? ProxyBypass { get; set; }

    /// <summary>The proxy's address without its credentials, and the credentials; null without a proxy.</summary>
    internal (Uri Address, NetworkCredential? Credentials)? ProxyParts()
    {
        if (string.IsNullOrWhiteSpace(Proxy) || !Uri.TryCreate(Proxy.Trim(), UriKind.Absolute, out var uri))
        {
            return null;
        }

        var address = new UriBuilder(uri) { UserName = "", Password = "", Path = "/", Query = "", Fragment = "" }.Uri;
        if (uri.UserInfo.Length == 0)
        {
            return (address, null);
        }

        var parts = uri.UserInfo.Split(':', 2);
        return (address, new NetworkCredential(Uri.UnescapeDataString(parts[0]), parts.Length > 1 ? Uri.UnescapeDataString(parts[1]) : ""));
    }
}

internal sealed class OutboundNetworkOptionsValidator : AbstractValidator<OutboundNetworkOptions>
{
    public OutboundNetworkOptionsValidator()
    {
        RuleFor(o => o.MaxResponseBytes).InclusiveBetween(1024, 16L * 1024 * 1024 * 1024);
        // The message never repeats the value: it may hold the proxy's password.
        RuleFor(o => o.Proxy).Must(BeAProxyAddress!).When(o => !string.IsNullOrWhiteSpace(o.Proxy))
            .WithMessage("must be an http proxy's address, http://host:port (with user:password@ when it asks for credentials), without a path or query.");
        RuleFor(o => o.ProxyBypass).Custom((value, context) =>
        {
            if (!ProxyBypassList.TryParse(value, out _, out var invalid))
            {
                context.AddFailure(
                    $"'{invalid}' is not a host name (corp.example, .corp.example), an IP address or a CIDR range (10.0.0.0/8); separate entries with commas.");
            }
        });
    }

    private static bool BeAProxyAddress(string proxy)
        => Uri.TryCreate(proxy.Trim(), UriKind.Absolute, out var uri) && uri.Scheme == Uri.UriSchemeHttp && uri.Host.Length > 0
            && uri.AbsolutePath == "/" && uri.Query.Length == 0 && uri.Fragment.Length == 0;
}

/// <summary>Chat turns (section <c>Chat</c>).</summary>
public sealed class ChatTurnOptions
{
    public const string Section = "Chat";

    /// <summary>Most model rounds of tool calls in one turn before the model must answer.</summary>
    public int MaxToolRounds { get; set; } = 8;

    /// <summary>
    /// Most tool calls run in one turn, over all its rounds: the model's calls beyond are not run (it is told so) nor
    /// stored. Calls run one after another, each up to Mcp:ToolCallTimeout, and the turn stores two messages per call in
    /// one append, so at most (Conversations:MaxBatchSize - 1) / 2: a larger value is taken as that (the host sees to it).
    /// </summary>
    public int MaxToolCalls { get; set; } = 64;

    /// <summary>Token budget of the context sent to the model (summary + recent messages), unless a model has its own.</summary>
    public int ContextTokenBudget { get; set; } = 8000;

    /// <summary>Per-model budgets, by model name (e.g. <c>"gpt-4o": 100000</c>).</summary>
    public Dictionary<string, int> ModelContextBudgets { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// Give the model the tool calls and results of earlier turns that fit in the context, as function calls and
    /// results, so it remembers what its tools returned (off: only its answers, as before).
    /// </summary>
    public bool ReplayToolCalls { get; set; } = true;

    /// <summary>The system prompt that starts every context (empty: none).</summary>
    public string SystemPrompt { get; set; } = "You are a helpful assistant.";

    /// <summary>
    /// Longest tool result stored as a message (longer results are cut; a tool call whose arguments are longer is stored
    /// without them). At most Conversations:MaxContentLength: a larger value is taken as that (the host sees to it).
    /// </summary>
    public int MaxStoredToolResultLength { get; set; } = 20_000;

    /// <summary>Longest tool result handed back to the model.</summary>
    public int MaxToolResultLength { get; set; } = 50_000;

    /// <summary>
    /// Longest user message content, and longest answer stored (a longer answer is stored cut, with metadata
    /// <c>truncated</c> and <c>answerLength</c>). At most Conversations:MaxContentLength: a larger value is taken as that.
    /// </summary>
    public int MaxContentLength { get; set; } = 100_000;

    /// <summary>
    /// When the node stops, how long a turn still waiting for its model may go on before it answers 503. The host's
    /// shutdown timeout (30 s by default) is raised to at least this plus <see cref="Features.Chat.ChatShutdown.AnswerTime"/>,
    /// so the answer reaches the client.
    /// </summary>
    public TimeSpan ShutdownGrace { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// How long a turn's model calls and tool calls may take together, from the model's first call: each has its own
    /// bound (Providers:RequestTimeout, Mcp:ToolCallTimeout), but a turn of <see cref="MaxToolRounds"/> rounds and
    /// <see cref="MaxToolCalls"/> calls held its request for tens of minutes. Past it, the call in flight is cancelled and
    /// the turn fails as a model call that fails mid-turn does (504, only the user's message stored).
    /// </summary>
    public TimeSpan TurnTimeout { get; set; } = TimeSpan.FromMinutes(5);

    public int BudgetFor(string model) => ModelContextBudgets.TryGetValue(model, out var budget) ? budget : ContextTokenBudget;
}

internal sealed class ChatTurnOptionsValidator : AbstractValidator<ChatTurnOptions>
{
    public ChatTurnOptionsValidator()
    {
        RuleFor(o => o.MaxToolRounds).InclusiveBetween(1, 100);
        RuleFor(o => o.MaxToolCalls).InclusiveBetween(1, 10_000);
        RuleFor(o => o.ContextTokenBudget).InclusiveBetween(100, 10_000_000);
        RuleForEach(o => o.ModelContextBudgets).Must(b => b.Value is >= 100 and <= 10_000_000).WithMessage("budgets must be between 100 and 10,000,000 tokens");
        RuleFor(o => o.MaxStoredToolResultLength).InclusiveBetween(100, 10_000_000);
        RuleFor(o => o.MaxToolResultLength).InclusiveBetween(100, 10_000_000);
        RuleFor(o => o.MaxContentLength).InclusiveBetween(1, 10_000_000);
        RuleFor(o => o.ShutdownGrace).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromMinutes(10));
        RuleFor(o => o.TurnTimeout).InclusiveBetween(TimeSpan.FromSeconds(1), TimeSpan.FromHours(2));
    }
}

/// <summary>MCP tool servers (section <c>Mcp</c>).</summary>
public sealed class McpOptions
{
    public const string Section = "Mcp";

    /// <summary>Time allowed to connect and complete the MCP handshake (test and chat).</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long the handshake waits for an answer to its first request (<c>server/discover</c>, of the 2026-07-28 revision)
    /// before it takes the server for an older one and sends <c>initialize</c> instead (the SDK's 5 s by default; always
    /// within <see cref="ConnectTimeout"/>). A server that does speak 2026-07-28 but answers later (a stdio program still
    /// starting on a busy machine) then refuses that <c>initialize</c>, and the connection fails.
    /// </summary>
    public TimeSpan DiscoverProbeTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Time allowed for one tool call.</summary>
    public TimeSpan ToolCallTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Most MCP servers per tenant (422 beyond).</summary>
    public int MaxServersPerTenant { get; set; } = 20;

    public int MaxHeaders { get; set; } = 20;

    public int MaxArguments { get; set; } = 50;

    /// <summary>Longest stdio argument (a process's whole argument list is bounded by the OS, one string to 128 KiB on Linux).</summary>
    public int MaxArgumentLength { get; set; } = 4096;

    /// <summary>Most stdio environment variables, plain and secret together.</summary>
    public int MaxEnvironmentVariables { get; set; } = 50;

    /// <summary>
    /// Longest header or environment variable name or value (plain or secret): servers refuse large headers (431; the
    /// whole header block is usually limited to 8-32 KiB), and a program's environment shares the OS's bound with its arguments.
    /// </summary>
    public int MaxValueLength { get; set; } = 4096;

    /// <summary>Most tools kept of one server's list (a test warns about the rest); 128 is also OpenAI's limit per request.</summary>
    public int MaxToolsPerServer { get; set; } = 128;

    /// <summary>Most pages of a server's tool list read (a server that pages forever is cut off).</summary>
    public int MaxToolListPages { get; set; } = 20;

    /// <summary>Longest tool description kept (longer ones are cut): OpenAI refuses function descriptions over 1,024.</summary>
    public int MaxToolDescriptionLength { get; set; } = 1_024;

    /// <summary>Longest input schema (JSON characters) of a tool offered to models: a larger one leaves the tool out.</summary>
    public int MaxToolSchemaLength { get; set; } = 16_384;

    /// <summary>
    /// How long chat turns leave out a server never listed whose listing failed, rather than waiting for it every turn
    /// (0: try every turn). A test lists it at once.
    /// </summary>
    public TimeSpan UnreachableRetryAfter { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>Most tools offered to the model in one chat turn, over all the turn's servers (the rest are left out and logged).</summary>
    public int MaxToolsPerTurn { get; set; } = 128;

    /// <summary>Running programs on this server for tenants: off unless enabled, and only the listed commands.</summary>
    public McpStdioOptions Stdio { get; set; } = new();
}

/// <summary>The stdio transport (section <c>Mcp:Stdio</c>).</summary>
public sealed class McpStdioOptions
{
    /// <summary>Allow stdio MCP servers at all (default off: stdio runs a program on this server).</summary>
    public bool Enabled { get; set; }

    /// <summary>Commands tenants may run, compared exactly (use full paths).</summary>
    public List<string> AllowedCommands { get; set; } = [];

    /// <summary>
    /// The environment variables tenants may give stdio programs (plain or secret): names, or prefixes ending in '*'
    /// (<c>GITHUB_*</c>), compared exactly. Empty (the default): any name but those refused as changing what runs, which
    /// are refused whatever this lists.
    /// </summary>
    public List<string> AllowedEnvironment { get; set; } = [];
}

internal sealed class McpOptionsValidator : AbstractValidator<McpOptions>
{
    public McpOptionsValidator()
    {
        RuleFor(o => o.ConnectTimeout).InclusiveBetween(TimeSpan.FromMilliseconds(100), TimeSpan.FromMinutes(5));
        RuleFor(o => o.DiscoverProbeTimeout).InclusiveBetween(TimeSpan.FromMilliseconds(100), TimeSpan.FromMinutes(5));
        RuleFor(o => o.ToolCallTimeout).InclusiveBetween(TimeSpan.FromMilliseconds(100), TimeSpan.FromMinutes(30));
        RuleFor(o => o.MaxServersPerTenant).InclusiveBetween(1, 10_000);
        RuleFor(o => o.MaxHeaders).InclusiveBetween(0, 1000);
        RuleFor(o => o.MaxArguments).InclusiveBetween(0, 1000);
        RuleFor(o => o.MaxArgumentLength).InclusiveBetween(1, 131_072);
        RuleFor(o => o.MaxEnvironmentVariables).InclusiveBetween(0, 1000);
        RuleFor(o => o.MaxValueLength).InclusiveBetween(1, 131_072);
        RuleFor(o => o.MaxToolsPerServer).InclusiveBetween(1, 10_000);
        RuleFor(o => o.MaxToolListPages).InclusiveBetween(1, 1_000);
        RuleFor(o => o.MaxToolDescriptionLength).InclusiveBetween(0, 1_000_000);
        RuleFor(o => o.MaxToolSchemaLength).InclusiveBetween(100, 10_000_000);
        RuleFor(o => o.MaxToolsPerTurn).InclusiveBetween(0, 10_000);
        RuleFor(o => o.UnreachableRetryAfter).InclusiveBetween(TimeSpan.Zero, TimeSpan.FromDays(1));
        RuleForEach(o => o.Stdio.AllowedCommands).Must(c => !string.IsNullOrEmpty(c) && Path.IsPathFullyQualified(c))
            .OverridePropertyName("Stdio.AllowedCommands")
            .WithMessage("Mcp:Stdio:AllowedCommands entries are full paths of programs (was '{PropertyValue}'): a bare name is looked up in the service's PATH when it runs.");
        RuleForEach(o => o.Stdio.AllowedEnvironment).Must(e => e is not null && McpServerRules.AllowedEnvironmentEntry().IsMatch(e))
            .OverridePropertyName("Stdio.AllowedEnvironment")
            .WithMessage("Mcp:Stdio:AllowedEnvironment entries are variable names (letters, digits, '_'), or their start followed by '*' (was '{PropertyValue}').");
    }
}
