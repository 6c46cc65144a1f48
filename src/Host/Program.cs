using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using JasperFx;
using Microsoft.AspNetCore.Http.Json;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Tenancy;
using ModularChat.BuildingBlocks.Tokenization;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Conversations;
using ModularChat.Host.Auth;
using ModularChat.Host.DeadLetters;
using ModularChat.Host.Infrastructure;
using ModularChat.Host.Nodes;
using ModularChat.Providers;
using ModularChat.Search;
using ModularChat.Summaries;
using Wolverine;

// Every start refusal of the process ends here, printed once (HostStart). Not under a host factory (the tests' in-memory
// hosts, the OpenAPI document's generation at build, which stops the entry point with HostAbortedException): it reports
// what the entry point throws as the reason its host failed.
WebApplication? app = null;
IConfiguration? configuration = null; // a refusal before the host is built is logged as the host would have
try
{
    var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = ContentRoot.For(args) });
    configuration = builder.Configuration;
    var limits = HostLimits.From(builder.Configuration);
    builder.WebHost.ConfigureKestrel(k => limits.ApplyTo(k.Limits));

    builder.Logging.UseTimestampFormatsPerFormatter();
    builder.AddModularChatTelemetry();
    builder.Services.AddSingleton(TimeProvider.System);
    builder.Services.AddHttpContextAccessor();
    builder.Services.AddScoped<TenantContext>();
    builder.Services.AddScoped<TenantSessions>();
    builder.Services.AddSingleton<ITokenCounter, O200kTokenCounter>();

    // HTTP surface: ProblemDetails for every error, JSON with string enums, malformed input surfaces as exceptions we map.
    builder.Services.AddProblemDetails(o => o.CustomizeProblemDetails = ctx =>
    {
        ctx.ProblemDetails.Instance ??= ctx.HttpContext.Request.Path;
        StatusCodeProblems.AddDetail(ctx);
        ctx.ProblemDetails.Extensions["traceId"] = Activity.Current?.TraceId.ToString() ?? ctx.HttpContext.TraceIdentifier;
    });
    // After AddProblemDetails: for requests whose Accept names no JSON type, which the framework's writer declines.
    builder.Services.AddSingleton<IProblemDetailsWriter, ProblemJsonFallbackWriter>();
    builder.Services.AddExceptionHandler<ProblemDetailsExceptionHandler>();
    builder.Services.Configure<RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
    builder.Services.Configure<JsonOptions>(o =>
    {
        o.SerializerOptions.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.CamelCase));
        o.SerializerOptions.Converters.Add(new StorableTextJsonConverter());
    });
    builder.Services.AddModularChatOpenApi();
    builder.Services.AddModularChatAuthentication();

    // Application: Mediator (source-generated here, the only generator in the app) with validation first.
    builder.Services.AddMediator(o =>
    {
        o.ServiceLifetime = ServiceLifetime.Scoped;
        o.GenerateTypesAsInternal = true;
        o.Assemblies = [typeof(ConversationsModule), typeof(ProvidersModule), typeof(SearchModule), typeof(SummariesModule)];
        o.PipelineBehaviors = [typeof(ValidationBehavior<,>)];
    });

    // Infrastructure.
    var role = HostRoles.Of(args);
    builder.Services.AddModularChatPersistence(builder.Configuration, role);
    builder.Host.UseWolverine(opts => opts.ConfigureModularChatMessaging(builder.Configuration, role));
    builder.Services.AddModularChatCaching(builder.Configuration);
    builder.Services.AddModularChatHealth(builder.Configuration);
    builder.Services.AddModularChatNodes(role);
    builder.Services.AddModularChatDeadLetters();
    builder.Services.AddNodeStopping(runsSharedWork: role == HostRole.Node); // before the modules': a command does none of the nodes' work
    if (role == HostRole.Node)
    {
        builder.Services.AddProjectionLagMonitor(builder.Configuration);
        DeadLetterGauge.AddDeadLetterGauge(builder.Services, builder.Configuration);
    }
    builder.Services.AddRequestEncodings();

    // Modules.
    builder.Services.AddConversationsModule();
    builder.Services.AddProvidersModule();
    builder.Services.AddSearchModule();
    builder.Services.AddSummariesModule();
    builder.Services.AddCrossModuleSettings();

    app = builder.Build();

    app.UseExceptionHandler();
    app.UseStatusCodePages();
    app.UseRequestEncodings(); // before the limit: it counts what a compressed body decompresses to
    app.UseRequestBodyLimit(limits.MaxRequestBodyBytes);
    app.UseJsonCharsetCheck();
    app.UseAuthentication();
    app.UseAuthorization();
    app.UseDatabaseAwayGate(limits);

    app.MapModularChatHealth();
    app.MapModularChatNodes();
    app.MapModularChatDeadLetters();
    app.MapApiDocument();
    var modules = app.MapGroup("").RefuseRepeatedQueryValues();
    modules.MapConversationsEndpoints();
    modules.MapProvidersEndpoints();
    modules.MapSearchEndpoints();
    modules.MapSummariesEndpoints();

    // No arguments: serve. Otherwise the JasperFx command line: token, projections, resources, describe, help, ...
    if (args.Length == 0)
    {
        try
        {
            // What refuses the start is checked before anything starts (a refusal then ends in its message alone, once).
            await HostStart.CheckAsync(app.Services);
        }
        catch when (!HostStart.OwnsTheProcess)
        {
            await app.DisposeAsync(); // as a failed start disposes the host; the host factory reports the exception
            throw;
        }

        // What app.RunAsync() does, but for the exit code of a failed start.
        try
        {
            await app.StartAsync();
        }
        catch
        {
            // The host reported it, with its stack trace (a fault of its own start, not a refusal).
            await app.DisposeAsync();
            if (!HostStart.OwnsTheProcess)
            {
                throw;
            }

            return 1;
        }

        await app.WaitForShutdownAsync();
        await app.DisposeAsync();
        return 0;
    }

    if (HostRoles.ReachesTheDatabaseFirst(args))
    {
        await HostStart.CheckDatabaseAsync(app.Services); // a refusal is reported below, once
    }

    if (await CommandGuard.RefusalAsync(app.Services, args) is { } refusal)
    {
        await Console.Error.WriteLineAsync(refusal);
        return 1;
    }

    if (HostRoles.ChecksFirst(args))
    {
        await HostStart.CheckAsync(app.Services); // a refusal is reported below, once
    }

    return await app.RunJasperFxCommands(TokenCommand.MergeRepeatedRoles(args));
}
catch (Exception e) when (e is not HostAbortedException && HostStart.OwnsTheProcess)
{
    return await HostStart.FailedAsync(e, app, configuration, args.Length == 0 ? null : args[0]);
}

/// <summary>The entry point, visible to integration tests.</summary>
public partial class Program;
