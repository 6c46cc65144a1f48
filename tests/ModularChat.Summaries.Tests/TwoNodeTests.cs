using Alba;
using System.Net.Http.Headers;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ModularChat.Summaries.Features.Sweep;
using ModularChat.Testing.Fakes;
using Npgsql;

namespace ModularChat.Summaries.Tests;

/// <summary>Two nodes on one database, each following its own appends: one model call per revision, no error for their routine races.</summary>
[Collection(AppCollection.Name)]
public sealed class TwoNodeTests(SummariesApp app)
{
    [Fact]
    public async Task Two_nodes_appending_to_the_same_conversations_call_the_model_once_per_revision_and_log_no_error()
    {
        var marker = $"twonode{Guid.NewGuid():N}";
        var previous = app.Llm.Responder;
        // A slow model: both nodes' jobs for a milestone would be calling it at the same time.
        app.Llm.Responder = SlowAbout(marker, previous);
        // Every error the hosts log counts, so start once the work earlier tests left queued is done: their jobs against a
        // failing model go on retrying for seconds after they end (each retry and the dead-lettering are errors), and under
        // load they ran into this test's window.
        await Eventually.Until(QueuedOrDueSoon, n => n == 0, Eventually.BackgroundSeconds, "messages of earlier tests still queued");
        var errorsBefore = app.Logs.Entries.Count(e => e.Level >= LogLevel.Error && e.Level < LogLevel.None);
        try
        {
            await using var otherNode = await app.StartHostAsync();
            using var nodeA = app.Client(app.LlmTenant);
            using var nodeB = otherNode.Server.CreateClient();
            nodeB.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(app.LlmTenant));

            var conversations = new List<(Guid Id, string Topic)>();
            for (var c = 0; c < 8; c++)
            {
                conversations.Add((await nodeA.NewConversation(), $"{marker}c{c}"));
            }

            // Every message goes through the other node than the one before it, all conversations in step: both nodes
            // see each conversation reach its first milestone (10).
            for (var i = 1; i <= 12; i++)
            {
                var node = i % 2 == 1 ? nodeA : nodeB;
                await Task.WhenAll(conversations.Select(c => node.AppendEach(c.Id, Api.Turns(i, i, c.Topic))));
            }

            foreach (var (id, _) in conversations)
            {
                await nodeA.SummaryCovering(id, 10, seconds: 90);
            }

            // Until nothing about these conversations is left in either node's queues (jobs put off included).
            await Eventually.Until(() => app.PendingEnvelopesAbout(conversations.Select(c => c.Id)), n => n == 0, 120, "messages about the conversations still queued");

            foreach (var (id, topic) in conversations)
            {
                var revisions = (await nodeA.History(id)).Count;
                var calls = app.Llm.Requests.Count(r => UserText(r).Contains(topic + ":", StringComparison.Ordinal));
                Assert.True(revisions >= 1);
                Assert.Equal(revisions, calls);
            }

            var errors = app.Logs.Entries.Where(e => e.Level >= LogLevel.Error && e.Level < LogLevel.None).Skip(errorsBefore).Select(e => e.ToString()).ToList();
            Assert.Empty(errors);
        }
        finally
        {
            app.Llm.Responder = previous;
        }
    }

    [Fact]
    public async Task Summary_jobs_queued_on_a_node_that_stops_are_done_by_the_node_that_remains()
    {
        var marker = $"handover{Guid.NewGuid():N}";
        var previous = app.Llm.Responder;
        // A slow model, and a node that runs one job at a time: when it stops, most of its jobs are still queued.
        app.Llm.Responder = SlowAbout(marker, previous);
        try
        {
            var conversations = new List<Guid>();
            var stopping = await app.StartHostAsync(new Dictionary<string, string?> { ["Summaries:JobParallelism"] = "1" });
            try
            {
                conversations.AddRange(await FourConversationsAsync(stopping, marker));

                // Its first job is calling the model; the other three wait behind it.
                await Eventually.Until(() => Task.FromResult(app.Llm.Requests.Count(r => UserText(r).Contains(marker, StringComparison.Ordinal))),
                    n => n >= 1, Eventually.BackgroundSeconds, "the stopping node's first job did not call the model");
                Assert.True(await app.PendingEnvelopesAbout(conversations) >= 3, "the stopping node had no jobs queued");
            }
            finally
            {
                await stopping.DisposeAsync(); // a graceful stop, as in a deploy
            }

            // The remaining node (it saw none of these appends) takes over the queued jobs and writes every summary.
            using var remaining = app.Client(app.LlmTenant);
            foreach (var id in conversations)
            {
                await remaining.SummaryCovering(id, 10, seconds: 90);
            }
        }
        finally
        {
            app.Llm.Responder = previous;
        }
    }

    [Fact]
    public async Task A_stopping_node_starts_no_summary_job_or_sweep_and_the_node_that_remains_does_its_jobs()
    {
        var marker = $"stopping{Guid.NewGuid():N}";
        var previous = app.Llm.Responder;
        // A model held back until the test lets it answer, and a node that runs one job at a time with a key of its own: its
        // model calls can be told apart. Held rather than slow (3 s, as before): under load the node's stop came more than
        // 3 s after its first call, once its second job had called the model, before the node was stopping.
        var firstCall = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        app.Llm.Responder = r => UserText(r).Contains(marker, StringComparison.Ordinal)
            ? new FakeReply($"Maria and Tomas planned the trip to Lisbon ({marker}).", Hold: firstCall.Task)
            : previous(r);
        var stoppingKey = $"stopping-node-key-{Guid.NewGuid():N}";
        try
        {
            var conversations = new List<Guid>();
            // Stopped first (registered last), as Kestrel is, and as slowly as its requests drain: until the test lets it go.
            // Its model calls time out after a minute (the tests' 8 s could end the held call in a retry, a second call).
            var draining = new RequestsDraining();
            var stopping = await app.StartHostAsync(
                new Dictionary<string, string?>
                {
                    ["Summaries:JobParallelism"] = "1",
                    ["Summaries:Llm:ApiKey"] = stoppingKey,
                    ["Summaries:Llm:Timeout"] = "00:01:00",
                },
                services => services.AddHostedService(_ => draining));
            try
            {
                conversations.AddRange(await FourConversationsAsync(stopping, marker));

                await Eventually.Until(() => Task.FromResult(app.Llm.RequestsWith(stoppingKey)), n => n >= 1, Eventually.BackgroundSeconds,
                    "the stopping node's first job did not call the model");

                // SIGTERM: the node stops starting background work, but runs on while its requests drain.
                var sweeps = stopping.Services.GetRequiredService<SummarySweepService>();
                stopping.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
                await draining.Began.WaitAsync(TimeSpan.FromSeconds(10));

                // Its first job ends now; each of the three queued behind it would call the model at once.
                Assert.Equal(1, app.Llm.RequestsWith(stoppingKey));
                firstCall.SetResult();
                await Task.Delay(TimeSpan.FromSeconds(10));
                Assert.Equal(1, app.Llm.RequestsWith(stoppingKey));
                // The sweep service (waiting for a requested sweep here) ended with the stop: it starts no other sweep.
                Assert.True(sweeps.ExecuteTask?.IsCompleted, "the stopping node still sweeps");
            }
            finally
            {
                firstCall.TrySetResult();
                draining.Release();
                await stopping.DisposeAsync();
            }

            // The remaining node (it saw none of these appends) takes the jobs the stopping node left durable.
            using var remaining = app.Client(app.LlmTenant);
            foreach (var id in conversations)
            {
                await remaining.SummaryCovering(id, 10, seconds: 90);
            }

            Assert.Equal(1, app.Llm.RequestsWith(stoppingKey));
        }
        finally
        {
            app.Llm.Responder = previous;
        }
    }

    [Fact]
    public async Task A_sweep_requested_from_a_stopping_node_answers_503_with_Retry_After_and_starts_nothing()
    {
        var draining = new RequestsDraining();
        var stopping = await app.StartHostAsync(services: services => services.AddHostedService(_ => draining));
        try
        {
            using var admin = OperatorOf(stopping);
            var sweeps = stopping.Services.GetRequiredService<SummarySweepService>();

            // SIGTERM: the node runs on while its requests drain, but its sweep service has ended.
            stopping.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
            await draining.Began.WaitAsync(TimeSpan.FromSeconds(10));

            var response = await admin.PostJson("/api/admin/summaries/sweep", new { tenant = app.PatientTenant });

            var problem = await response.ShouldBeProblem(503);
            Assert.Contains("stopping", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
            Assert.Equal(TimeSpan.FromSeconds(5), response.Headers.RetryAfter?.Delta);
            Assert.False(sweeps.Running);
        }
        finally
        {
            draining.Release();
            await stopping.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_sweep_handed_over_as_the_node_begins_to_stop_is_refused_not_queued_where_nothing_runs_it()
    {
        var draining = new RequestsDraining();
        var stopping = await app.StartHostAsync(services: services => services.AddHostedService(_ => draining));
        try
        {
            var sweeps = stopping.Services.GetRequiredService<SummarySweepService>();
            // Before the stop the loop takes a request at once (and runs it).
            Assert.Equal(SweepHandover.Taken, await sweeps.RequestAsync(new SweepRequest(TenantId: app.PatientTenant), CancellationToken.None));
            await Eventually.Until(() => Task.FromResult(sweeps.Running), running => !running, Eventually.BackgroundSeconds, "the sweep did not end");

            // SIGTERM, and a request handed over in the same instant, before the loop has seen the stop: it used to be queued
            // (and answered 202) after the endpoint's check that the node was not stopping, and the loop ended without it.
            stopping.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
            Assert.Equal(SweepHandover.NodeStopping, await sweeps.RequestAsync(new SweepRequest(TenantId: app.PatientTenant), CancellationToken.None));
            await draining.Began.WaitAsync(TimeSpan.FromSeconds(10));
            // And once it has.
            Assert.Equal(SweepHandover.NodeStopping, await sweeps.RequestAsync(new SweepRequest(TenantId: app.PatientTenant), CancellationToken.None));
        }
        finally
        {
            draining.Release();
            await stopping.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_requested_sweep_waiting_for_another_nodes_sweep_when_its_node_stops_runs_on_the_node_that_remains()
    {
        await using var otherSweep = await OtherNodesSweep.StartAsync(app.PostgresConnectionString);
        var tenant = ModularChatApp.NewUser("handed-on");
        var draining = new RequestsDraining();
        var stopping = await app.StartHostAsync(services: services => services.AddHostedService(_ => draining));
        try
        {
            using var admin = OperatorOf(stopping);
            var sweeps = stopping.Services.GetRequiredService<SummarySweepService>();

            // Accepted and taken: it waits behind the other node's sweep.
            Assert.Equal(System.Net.HttpStatusCode.Accepted, (await admin.PostJson("/api/admin/summaries/sweep", new { resummarize = true, tenant })).StatusCode);
            Assert.True(sweeps.Running);

            // SIGTERM meanwhile: the node starts no sweep any more, and its sweep service ends. The request used to end with it.
            stopping.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
            await draining.Began.WaitAsync(TimeSpan.FromSeconds(10));
            await sweeps.ExecuteTask!.WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            draining.Release();
            await stopping.DisposeAsync();
        }

        // The other node's sweep ends: the node that remains runs the request after it.
        await otherSweep.EndAsync();
        await Eventually.Until(
            () => Task.FromResult(app.Logs.Entries.Count(e => e.Category.EndsWith(".SummarySweep", StringComparison.Ordinal)
                && e.Message.Contains($"started (resummarize: True, tenants: {tenant})", StringComparison.Ordinal))),
            n => n >= 1, Eventually.BackgroundSeconds, "the sweep requested from the node that stopped did not run");
    }

    /// <summary>A client of <paramref name="node"/> as one of the service's operators.</summary>
    private HttpClient OperatorOf(IAlbaHost node)
    {
        var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser("operator"), null, "operator"));
        return client;
    }

    /// <summary>Four conversations of the LLM tenant on <paramref name="node"/>, ten turns each (due for a summary).</summary>
    private async Task<List<Guid>> FourConversationsAsync(IAlbaHost node, string marker)
    {
        using var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(app.LlmTenant));
        var conversations = new List<Guid>();
        for (var c = 0; c < 4; c++)
        {
            var id = await client.NewConversation();
            conversations.Add(id);
            await client.AppendEach(id, Api.Turns(1, 10, $"{marker}c{c}"));
        }

        return conversations;
    }

    /// <summary>A model that answers requests about <paramref name="marker"/> after 3 s, and the rest as <paramref name="previous"/> does.</summary>
    private static Func<RecordedRequest, FakeReply> SlowAbout(string marker, Func<RecordedRequest, FakeReply> previous)
        => r => UserText(r).Contains(marker, StringComparison.Ordinal)
            ? new FakeReply($"Maria and Tomas planned the trip to Lisbon ({marker}).", Delay: TimeSpan.FromSeconds(3))
            : previous(r);

    private static string UserText(RecordedRequest request)
        => string.Join("\n", request.Messages.Where(m => m?["role"]?.GetValue<string>() == "user").Select(m => m?["content"]?.ToString()));

    /// <summary>Envelopes waiting to be handled or running, or scheduled within a minute (retries; not a patient tenant's job an hour away).</summary>
    private async Task<long> QueuedOrDueSoon()
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "select count(*) from modularchat.wolverine_incoming_envelopes where status = 'Incoming' or (status = 'Scheduled' and execution_time < now() + interval '1 minute')",
            connection);
        return (long)(await command.ExecuteScalarAsync())!;
    }
}
