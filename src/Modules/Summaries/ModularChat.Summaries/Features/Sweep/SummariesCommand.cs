using JasperFx.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace ModularChat.Summaries.Features.Sweep;

public sealed class SummariesInput : NetCoreInput
{
    [Description("Rebuild every summary from its first message (after a strategy or model change)")]
    public bool ResummarizeFlag { get; set; }

    [Description("Only this tenant's conversations")]
    public string? TenantFlag { get; set; }
}

/// <summary><c>summaries [--resummarize] [--tenant t]</c>: sweeps for missing and stale summaries, queues them and prints progress until done.</summary>
[Description("Find conversations whose summary is missing or stale (or all, with --resummarize), summarize them and print progress", Name = "summaries")]
public sealed class SummariesCommand : JasperFxAsyncCommand<SummariesInput>
{
    public override async Task<bool> Execute(SummariesInput input)
    {
        using var host = input.BuildHost();
        if (host is WebApplication web)
        {
            // The command processes its own jobs, so the host runs, but it must not take the service's HTTP port.
            web.Urls.Clear();
            web.Urls.Add("http://127.0.0.1:0");
        }

        await host.StartAsync();
        try
        {
            var sweep = host.Services.GetRequiredService<SummarySweep>();
            var result = await sweep.RunAsync(new SweepRequest(input.ResummarizeFlag, input.TenantFlag), p =>
                Console.WriteLine($"examined {p.Examined}, queued {p.Queued}, done {p.Finished}, waiting for {p.Waiting}, not done in time {p.Unfinished}"),
                CancellationToken.None);
            if (!result.Ran)
            {
                Console.Error.WriteLine("Another node is sweeping right now: try again when it has finished.");
                return false;
            }

            Console.WriteLine($"sweep {result.SweepId} finished in {result.Duration.TotalSeconds:0.0} s: {result.Examined} conversations examined, " +
                              $"{result.Queued} queued, {result.Finished} done, {result.Unfinished} not done in time (still queued, retrying or failed)");
            if (result.Unfinished > 0)
            {
                Console.WriteLine("The jobs not done in time stay queued: the service's nodes carry them on (at once, or at the start of " +
                                  "the next one), and a job that keeps failing ends among the dead letters (GET /api/admin/summaries/failures).");
            }

            return result.Unfinished == 0;
        }
        finally
        {
            await host.StopAsync();
        }
    }
}
