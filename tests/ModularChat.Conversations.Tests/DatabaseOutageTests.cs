using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Http.Headers;
using Alba;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Marten;
using Marten.Services;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Conversations.Contracts;
using ModularChat.Host.Infrastructure;
using ModularChat.Summaries.Features.Sweep;
using Npgsql;
using Wolverine.Runtime;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// A node whose PostgreSQL goes away (a relay in front of the real server is cut): requests answer 503 with Retry-After
/// instead of 500 and the node reports itself not ready (but live, so it is not restarted for it); once the database is
/// back the node serves again with nothing lost or doubled.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class DatabaseOutageTests(ConversationsApp app)
{
    [Fact]
    public async Task While_the_database_is_unreachable_requests_answer_503_with_retry_after_and_the_node_recovers_when_it_is_back()
    {
        await using var proxy = PostgresProxy();
        await using var node = await StartNodeAsync(proxy);
        using var client = Client(app, node, "outage");
        var conversation = await (await client.PostJson("/api/conversations", new { title = "outage" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var messages = $"/api/conversations/{conversation.Id}/messages";
        await (await client.PostJson(messages, new { role = "user", content = "before the outage", externalId = "m1" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        proxy.Cut();

        var append = await client.PostJson(messages, new { role = "user", content = "during the outage", externalId = "m2" });
        var problem = await append.ShouldBeProblem(503);
        Assert.Contains("database", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(5), append.Headers.RetryAfter?.Delta);
        await (await client.GetAsync("/api/conversations")).ShouldBeProblem(503);
        await (await client.GetAsync(messages)).ShouldBeProblem(503);
        using var anonymous = node.Server.CreateClient();
        var ready = await anonymous.GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        var readiness = await ready.Content.ReadAsStringAsync();
        Assert.DoesNotContain(proxy.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), readiness, StringComparison.Ordinal);
        Assert.Contains("PostgreSQL is unreachable", readiness, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/live")).StatusCode);

        proxy.Restore();

        // A client retrying the refused append (same externalId) gets it stored once the database answers again.
        var status = await Eventually.Until(
            async () => (await client.PostJson(messages, new { role = "user", content = "during the outage", externalId = "m2" })).StatusCode,
            code => code != HttpStatusCode.ServiceUnavailable, seconds: 60, what: "The node still answers 503");
        Assert.Equal(HttpStatusCode.Created, status);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/ready")).StatusCode);
        var page = await (await client.GetAsync(messages)).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal([(1L, "m1"), (2L, "m2")], page.Items.Select(m => (m.Sequence, m.ExternalId)));
    }

    /// <summary>
    /// A PostgreSQL that takes connections but does not answer (stalled, or behind a proxy that is): readiness says so within
    /// its check's 3 s, as for one that refuses connections. Npgsql's cancellation of the check's select 1 waits for the
    /// server to drop the cancel request's connection (authentication_timeout, 60 s): a load balancer's probe with a
    /// timeout of its own saw nothing for a minute, and an operator's curl hung as long.
    /// </summary>
    [Fact]
    public async Task Readiness_answers_503_in_time_while_PostgreSQL_takes_connections_but_does_not_answer()
    {
        await using var proxy = PostgresProxy();
        await using var node = await StartNodeAsync(proxy);
        using var anonymous = node.Server.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/ready")).StatusCode);

        proxy.Stall();
        var asked = Stopwatch.StartNew();
        using var ready = await anonymous.GetAsync("/health/ready");
        var elapsed = asked.Elapsed;
        var readiness = await ready.Content.ReadAsStringAsync();
        proxy.Restore();

        Assert.True(elapsed < TimeSpan.FromSeconds(30), $"Readiness answered after {elapsed}");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        Assert.Contains("PostgreSQL did not answer in time", readiness, StringComparison.Ordinal);
        Assert.DoesNotContain(proxy.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), readiness, StringComparison.Ordinal);
        await Eventually.Until(async () => (await anonymous.GetAsync("/health/ready")).StatusCode, code => code == HttpStatusCode.OK,
            seconds: 60, what: "Readiness did not come back once PostgreSQL answered again");
    }

    /// <summary>
    /// A PostgreSQL that takes connections but does not answer: each request waited about a minute (its command timeout, then
    /// Npgsql's cancel request, which waits for the server to drop it), holding a thread meanwhile. Once the node's check has
    /// found the server not answering (here made to look by readiness, as a load balancer's probes would), API requests answer
    /// 503 at once, untried; they are taken again once it answers, and nothing is lost.
    /// </summary>
    [Fact]
    public async Task While_PostgreSQL_takes_connections_but_does_not_answer_API_requests_answer_503_at_once_and_are_taken_again_once_it_answers()
    {
        var logs = new CapturedLogs(); // this node's only
        await using var proxy = PostgresProxy();
        await using var node = await StartNodeAsync(proxy, services: services => services.AddSingleton<ILoggerProvider>(logs));
        using var client = Client(app, node, "stalled");
        using var anonymous = node.Server.CreateClient();
        var conversation = await (await client.PostJson("/api/conversations", new { title = "stalled" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var messages = $"/api/conversations/{conversation.Id}/messages";
        await (await client.PostJson(messages, new { role = "user", content = "before the stall", externalId = "m1" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        var outages = node.Services.GetRequiredService<DatabaseOutageLog>();
        Assert.Null(outages.StalledSince);

        proxy.Stall();
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await anonymous.GetAsync("/health/ready")).StatusCode);
        // Readiness told the check (within its 3 s; nothing else of the node's times out that soon: connecting waits 15 s).
        Assert.True(outages.Suspected || outages.Away, "Readiness found PostgreSQL not answering but the node's check was not told");
        await Eventually.Until(() => Task.FromResult(outages.StalledSince), since => since is not null, seconds: 30,
            what: "The node's check did not find PostgreSQL stalled after readiness did");

        var asked = Stopwatch.StartNew();
        using var append = await client.PostJson(messages, new { role = "user", content = "during the stall", externalId = "m2" });
        var elapsed = asked.Elapsed;
        var problem = await append.ShouldBeProblem(503);
        Assert.True(elapsed < TimeSpan.FromSeconds(5), $"The append answered after {elapsed}"); // untried: 15 s or more otherwise
        Assert.Contains("has not answered this node's check", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(5), append.Headers.RetryAfter?.Delta);
        await (await client.GetAsync(messages)).ShouldBeProblem(503);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync(messages)).StatusCode); // no token: told so first
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/live")).StatusCode);
        Assert.Single(logs.Entries, e => e.Category == typeof(DatabaseAwayGate).FullName && e.Level == LogLevel.Warning);

        proxy.Restore();
        var status = await Eventually.Until(
            async () => (await client.PostJson(messages, new { role = "user", content = "during the stall", externalId = "m2" })).StatusCode,
            code => code != HttpStatusCode.ServiceUnavailable, seconds: 60, what: "The node still answers 503");
        Assert.Equal(HttpStatusCode.Created, status);
        Assert.Null(outages.StalledSince);
        var page = await (await client.GetAsync(messages)).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal([(1L, "m1"), (2L, "m2")], page.Items.Select(m => (m.Sequence, m.ExternalId)));
    }

    /// <summary>
    /// The gate follows the check's last answer alone (the check itself is left out here, so that nothing answers behind the
    /// test's back), and <c>Limits:RefuseRequestsWhileDatabaseAway=false</c> turns it off. A refused connection does not
    /// close it: statements fail at once then, and what needs no database is still served.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task API_requests_are_refused_untried_only_while_the_check_finds_PostgreSQL_stalled_and_only_when_configured(bool refuse)
    {
        await using var node = await app.StartHostAsync(
            new Dictionary<string, string?> { ["Limits:RefuseRequestsWhileDatabaseAway"] = refuse ? null : "false" },
            services =>
            {
                foreach (var probe in services.Where(d => d.ImplementationType == typeof(DatabaseOutageLog.Probe)).ToList())
                {
                    services.Remove(probe);
                }
            });
        using var client = Client(app, node, "gate");
        var outages = node.Services.GetRequiredService<DatabaseOutageLog>();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/conversations")).StatusCode);

        outages.Suspect(new NpgsqlException("Exception while reading from stream (staged by a test)", new TimeoutException("Timeout during reading attempt")));
        outages.Unanswered(new TimeoutException("The database did not answer select 1 within 5 s (staged by a test)."));
        Assert.NotNull(outages.StalledSince);
        var stalled = await client.GetAsync("/api/conversations");
        if (refuse)
        {
            await stalled.ShouldBeProblem(503);
        }
        else
        {
            Assert.Equal(HttpStatusCode.OK, stalled.StatusCode);
        }

        outages.Unanswered(new NpgsqlException("Failed to connect (staged by a test)", new System.Net.Sockets.SocketException(111)));
        Assert.Null(outages.StalledSince);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/conversations")).StatusCode);

        outages.Unanswered(new TimeoutException("The database did not answer select 1 within 5 s (staged by a test)."));
        outages.Answered();
        Assert.Null(outages.StalledSince);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/conversations")).StatusCode);
    }

    /// <summary>
    /// A request whose statement met PostgreSQL not answering makes the node's check ask (the request's exception goes on to
    /// its 503 unchanged); a failure PostgreSQL answered (a deadlock) or one that is not the database's does not.
    /// </summary>
    [Fact]
    public async Task A_request_that_meets_PostgreSQL_not_answering_makes_the_check_ask_and_its_exception_goes_on_unchanged()
    {
        using var loggers = LoggerFactory.Create(_ => { });
        var timeout = new NpgsqlException("Exception while reading from stream", new TimeoutException("Timeout during reading attempt"));
        var deadlock = new PostgresException("deadlock detected", "ERROR", "ERROR", PostgresErrorCodes.DeadlockDetected);
        var other = new InvalidOperationException("not the database");

        Assert.Equal((timeout, true), await Failed(timeout, "/api/conversations"));
        Assert.Equal((deadlock, false), await Failed(deadlock, "/api/conversations"));
        Assert.Equal((other, false), await Failed(other, "/api/conversations"));
        Assert.Equal((timeout, false), await Failed(timeout, "/health/ready")); // not a request the gate looks at

        // What the request failed with, and whether the node's check was then to ask PostgreSQL.
        async Task<(Exception Thrown, bool Suspected)> Failed(Exception failure, string path)
        {
            var outages = new DatabaseOutageLog(loggers.CreateLogger<DatabaseOutageLog>(), TimeProvider.System);
            var gate = new DatabaseAwayGate(_ => throw failure, outages, null!, TimeProvider.System, loggers.CreateLogger<DatabaseAwayGate>());
            var context = new DefaultHttpContext();
            context.Request.Path = path;
            context.SetEndpoint(new Endpoint(_ => Task.CompletedTask, null, "test"));
            var thrown = await Assert.ThrowsAnyAsync<Exception>(() => gate.InvokeAsync(context));
            return (thrown, outages.Suspected);
        }
    }

    [Fact]
    public async Task A_database_that_does_not_answer_in_time_gives_503_saying_so_and_the_retry_is_stored_once()
    {
        // A node whose commands time out after 3 s (long enough for its start on a busy machine), and a conversation whose stream lock another session holds.
        var shortTimeout = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString) { CommandTimeout = 3 };
        await using var node = await app.StartHostAsync(new Dictionary<string, string?> { ["ConnectionStrings:Postgres"] = shortTimeout.ConnectionString });
        using var client = node.Server.CreateClient();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(ModularChatApp.NewUser("slow")));
        var conversation = await (await client.PostJson("/api/conversations", new { title = "slow" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var messages = $"/api/conversations/{conversation.Id}/messages";
        await using var holder = new NpgsqlConnection(app.PostgresConnectionString);
        await holder.OpenAsync();
        await using var lockTransaction = await holder.BeginTransactionAsync();
        await using (var lockStream = new NpgsqlCommand("select 1 from modularchat.mt_streams where id = @id for update", holder))
        {
            lockStream.Parameters.AddWithValue("id", conversation.Id);
            await lockStream.ExecuteNonQueryAsync();
        }

        var append = await client.PostJson(messages, new { role = "user", content = "while locked", externalId = "m1" });

        var problem = await append.ShouldBeProblem(503);
        Assert.Contains("did not answer in time", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(5), append.Headers.RetryAfter?.Delta);

        await lockTransaction.RollbackAsync();
        var retried = await (await client.PostJson(messages, new { role = "user", content = "while locked", externalId = "m1" }))
            .ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        Assert.Equal(1, retried.Sequence);
        var page = await (await client.GetAsync(messages)).ReadAs<PageDto<MessageDto>>(HttpStatusCode.OK);
        Assert.Equal([(1L, "m1")], page.Items.Select(m => (m.Sequence, m.ExternalId)));
    }

    [Fact]
    public async Task A_notice_whose_handler_meets_the_database_away_waits_for_it_and_is_handled_once_it_is_back()
    {
        await using var proxy = PostgresProxy();
        // Failures while the database answers are bounded; those while it is away (three here) must not count. Wolverine's
        // entries at every level, to see its retries' lines, and those of its executors' loggers (a message type's category).
        var logs = new CapturedLogs(); // this node's only
        await using var node = await StartNodeAsync(
            proxy,
            new()
            {
                ["Messaging:MaxAttemptsWhileDatabaseAnswers"] = "3",
                ["Logging:LogLevel:Wolverine"] = "Debug",
                ["Logging:LogLevel:ModularChat.Conversations.Contracts"] = "Debug",
            },
            services => services.AddSingleton<ILoggerProvider>(logs));
        await using var conversation = await CountedConversationAsync(app, node, "away");

        // The next notice's handler waits on that row (another session holds it) when the database goes away.
        var holding = await conversation.HoldActivityAsync();
        await conversation.AppendAsync("second");
        await Eventually.Until(
            () => conversation.Scalar(WaitingOnTheActivitySql), n => n > 0, seconds: Eventually.BackgroundSeconds,
            what: "The second notice's handler did not reach the held row");
        var before = logs.Entries.Count();
        proxy.Cut();
        await holding.RollbackAsync();
        // Longer than Wolverine's default took to give up (three attempts at once).
        await Task.Delay(TimeSpan.FromSeconds(3));
        proxy.Restore();

        // The notice was tried again once the database was back: nothing went to the dead-letter store.
        await Eventually.Until(() => conversation.Scalar(CountedSql), n => n == 2, seconds: Eventually.BackgroundSeconds, what: "The second notice was lost");
        Assert.Equal(0, await conversation.Scalar(DeadLetteredSql));

        // Each time it was put back to wait, Wolverine's "was rescheduled to queue" (a warning, without an exception) went to
        // Debug while the outage log knew of the outage (it says the outage once): the first one, 0.25 s after the first
        // failure, may come before any entry has told the outage log.
        var rescheduled = logs.Entries.Skip(before).Where(e => e.Category == WolverineRetryLogLevel.Category && e.EventId.Id == WolverineRuntime.RescheduledEventId).ToList();
        var warnings = rescheduled.Count(e => e.Level >= LogLevel.Warning);
        Assert.True(warnings <= 1, $"Wolverine wrote {warnings} retries at Warning or above");
        Assert.Contains(rescheduled, e => e.Level == LogLevel.Debug);

        // Wolverine's "Failed to process message" for each failed attempt (event 105, with its stack trace), under the message
        // type's category: at Debug (for the append notices' batches, whose failures the module logs, always; for other
        // handlers while the outage log knows of the outage: the next test).
        var failed = logs.Entries.Skip(before).Where(e => e.EventId.Id == WolverineRetryLogLevel.MessageFailedEventId
            && e.Exception is not null && DatabaseOutages.IsDatabaseAway(e.Exception)).ToList();
        var failedAtWarning = failed.Count(e => e.Level is >= LogLevel.Warning and < LogLevel.None);
        Assert.True(failedAtWarning == 0, $"Wolverine wrote {failedAtWarning} 'Failed to process message' entries about the outage at Warning or above");
        Assert.Contains(failed, e => e.Level == LogLevel.Debug && e.Category == typeof(AppendsCommitted[]).FullName);
    }

    [Fact]
    public async Task A_notice_batch_that_waited_for_the_database_still_gets_its_retries_for_another_failure_afterwards()
    {
        // Wolverine's attempts count the batch's put-backs while the database was away: its retries after another failure
        // (1 s, 5 s, 30 s) went by attempt, so a batch put back three times was dead-lettered at its first failure after the
        // outage. The message type's entries at Debug, to see each failed attempt (Wolverine's 'Failed to process message').
        await using var proxy = PostgresProxy();
        var logs = new CapturedLogs(); // this node's only
        await using var node = await StartNodeAsync(
            proxy, new() { ["Logging:LogLevel:ModularChat.Conversations.Contracts"] = "Debug" }, services => services.AddSingleton<ILoggerProvider>(logs));
        await using var conversation = await CountedConversationAsync(app, node, "away-then-refused");
        var holding = await conversation.HoldActivityAsync();
        await conversation.AppendAsync("second");
        await Eventually.Until(
            () => conversation.Scalar(WaitingOnTheActivitySql), n => n > 0, seconds: Eventually.BackgroundSeconds,
            what: "The second notice's handler did not reach the held row");
        var before = logs.Entries.Count();
        proxy.Cut();
        // The handler's session, cut off from its node, would still write the row once it is let go (and then be rolled back).
        await conversation.Scalar("select count(pg_terminate_backend(pid)) from pg_stat_activity where wait_event_type = 'Lock' and query like '%conversationactivity%' and pid <> pg_backend_pid()");
        await holding.RollbackAsync();
        // PostgreSQL refuses the batch's first write of the conversation's activity once it is back (neither a lost race nor the database away).
        var refused = $"activity write refused ({conversation.Id:N})";
        var trigger = $"refuse_once_{conversation.Id:N}";
        await conversation.Scalar($"create sequence modularchat.{trigger}");
        await conversation.Scalar($"create function modularchat.{trigger}() returns trigger language plpgsql as $$ begin if nextval('modularchat.{trigger}') = 1 then raise exception '{refused}'; end if; return new; end $$");
        await conversation.Scalar($"create trigger {trigger} before insert or update on modularchat.mt_doc_conversationactivity for each row when (new.id = '{conversation.Id}') execute function modularchat.{trigger}()");
        try
        {
            // Three attempts failed with the database away (put back after 0.25 s, 1 s, then 5 s): the next one is the 4th.
            await Eventually.Until(() => Task.FromResult(FailedAttempts().Count(e => e.Exception is not null && DatabaseOutages.IsDatabaseAway(e.Exception))),
                n => n >= 3, seconds: Eventually.BackgroundSeconds, what: "The batch did not fail three times with the database away");
            proxy.Restore();

            // Refused once the database is back, retried after 1 s (its first pause), and handled: not dead-lettered.
            var (counted, deadLettered) = await Eventually.Until(
                async () => (await conversation.Scalar(CountedSql), await conversation.Scalar(DeadLetteredSql)),
                v => v.Item1 == 2 || v.Item2 > 0, seconds: Eventually.BackgroundSeconds, what: "The second notice was neither handled nor dead-lettered");
            Assert.Equal((2, 0), (counted, deadLettered));
        }
        finally
        {
            await conversation.Scalar($"drop trigger {trigger} on modularchat.mt_doc_conversationactivity; drop function modularchat.{trigger}(); drop sequence modularchat.{trigger}");
        }

        Assert.Contains(FailedAttempts(), e => e.Exception is not null && Exceptions.Flatten(e.Exception).Any(x => x.Message.Contains(refused, StringComparison.Ordinal)));
        var retry = Assert.Single(logs.Entries.Skip(before), e => e.Level >= LogLevel.Warning && e.Category == "ModularChat.Summaries.Jobs.NoticeBatchFailures");
        Assert.Contains(conversation.Id.ToString(), retry.Message, StringComparison.Ordinal);
        Assert.Contains("retried in 1 s", retry.Message, StringComparison.Ordinal);

        List<LogEntry> FailedAttempts() => logs.Entries.Skip(before)
            .Where(e => e.EventId.Id == WolverineRetryLogLevel.MessageFailedEventId && e.Category == typeof(AppendsCommitted[]).FullName).ToList();
    }

    [Fact]
    public async Task A_handler_that_meets_the_database_away_is_not_written_by_Wolverine_at_Error_while_the_outage_is_logged()
    {
        // Summaries' clean-up after a deletion (Wolverine writes its failures at Error) waits on the conversation's activity
        // row, which another session holds, when the database goes away.
        await using var proxy = PostgresProxy();
        var logs = new CapturedLogs(); // this node's only
        await using var node = await StartNodeAsync(
            proxy, new() { ["Logging:LogLevel:ModularChat.Conversations.Contracts"] = "Debug" }, services => services.AddSingleton<ILoggerProvider>(logs));
        await using var conversation = await CountedConversationAsync(app, node, "away-cleanup");
        await Eventually.Until(() => app.PendingEnvelopesAbout([conversation.Id]), n => n == 0, seconds: Eventually.BackgroundSeconds,
            what: "Messages about the conversation still queued");
        var holding = await conversation.HoldActivityAsync();
        Assert.Equal(HttpStatusCode.NoContent, (await conversation.Client.DeleteAsync($"/api/conversations/{conversation.Id}")).StatusCode);
        await Eventually.Until(
            () => conversation.Scalar(WaitingOnTheActivitySql), n => n > 0, seconds: Eventually.BackgroundSeconds,
            what: "The clean-up's handler did not reach the held row");
        proxy.Cut();
        await holding.RollbackAsync();
        await Task.Delay(TimeSpan.FromSeconds(3));
        proxy.Restore();

        // Handled once the database is back.
        await Eventually.Until(() => conversation.Scalar(CountedSql), n => n == 0, seconds: Eventually.BackgroundSeconds, what: "The clean-up was lost");
        var failed = logs.Entries.Where(e => e.EventId.Id == WolverineRetryLogLevel.MessageFailedEventId
            && e.Exception is not null && DatabaseOutages.IsDatabaseAway(e.Exception)).ToList();
        Assert.Contains(failed, e => e.Level == LogLevel.Debug && e.Category == typeof(ConversationDeleted).FullName);
        var failedAtWarning = failed.Count(e => e.Level is >= LogLevel.Warning and < LogLevel.None);
        Assert.True(failedAtWarning == 0, $"Wolverine wrote {failedAtWarning} 'Failed to process message' entries about the outage at Warning or above");
    }

    [Fact]
    public async Task A_handler_failure_that_is_not_the_database_away_is_still_written_by_Wolverine_at_the_handler_s_level()
    {
        // Summaries' clean-up after a deletion meets the activity table gone (42P01): Wolverine's "Failed to process message"
        // stays at the handler's level (Error), as does every failure that is not the outage. Not the append notices'
        // handler: its failures are the module's to log (NoticeBatchFailures), Wolverine's entry for them is Debug anyway.
        // The node is alone on its database.
        var logs = new CapturedLogs(); // this node's only
        var database = await app.DatabaseOfItsOwnAsync("handler_failure");
        await using var node = await app.StartHostAsync(
            new Dictionary<string, string?> { ["ConnectionStrings:Postgres"] = database }, services => services.AddSingleton<ILoggerProvider>(logs));
        await using var conversation = await CountedConversationAsync(app, node, "handler-failure", database);
        await Eventually.Until(() => app.PendingEnvelopesAbout([conversation.Id], database), n => n == 0, seconds: Eventually.BackgroundSeconds,
            what: "Messages about the conversation still queued");

        await conversation.Scalar("alter table modularchat.mt_doc_conversationactivity rename to mt_doc_conversationactivity_away");
        try
        {
            Assert.Equal(HttpStatusCode.NoContent, (await conversation.Client.DeleteAsync($"/api/conversations/{conversation.Id}")).StatusCode);
            await Eventually.Until(
                () => Task.FromResult(logs.Entries.Count(e => e.EventId.Id == WolverineRetryLogLevel.MessageFailedEventId
                    && e.Exception?.GetBaseException() is PostgresException { SqlState: PostgresErrorCodes.UndefinedTable })),
                n => n > 0, seconds: Eventually.BackgroundSeconds, what: "The clean-up's handler did not fail");
        }
        finally
        {
            await conversation.Scalar("alter table modularchat.mt_doc_conversationactivity_away rename to mt_doc_conversationactivity");
        }

        var failed = logs.Entries.Where(e => e.EventId.Id == WolverineRetryLogLevel.MessageFailedEventId
            && e.Exception?.GetBaseException() is PostgresException { SqlState: PostgresErrorCodes.UndefinedTable }).ToList();
        Assert.All(failed, e => Assert.Equal((LogLevel.Error, typeof(ConversationDeleted).FullName), (e.Level, e.Category)));
        Assert.False(node.Services.GetRequiredService<DatabaseOutageLog>().Away);
    }

    [Fact]
    public async Task A_notice_that_keeps_timing_out_while_the_database_answers_goes_to_the_dead_letter_store_and_can_be_replayed()
    {
        var database = await app.DatabaseOfItsOwnAsync("impatient");
        var logs = new CapturedLogs(); // this node's only
        await using var node = await StartImpatientNodeAsync(app, database, services => services.AddSingleton<ILoggerProvider>(logs));
        using var noticeFailures = new MetricCollector<long>(node.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.SummaryNoticeFailures);
        await using var conversation = await CountedConversationAsync(app, node, "stuck", database);

        // The activity row stays locked by another session: every attempt of the next notice's handler times out.
        var holding = await conversation.HoldActivityAsync();
        await conversation.AppendAsync("second");

        // Two timeouts (3 s each, 0.25 s apart) while the database answers: the notice is dead-lettered, not tried forever.
        await Eventually.Until(() => conversation.Scalar(DeadLetteredSql), n => n == 1, seconds: Eventually.BackgroundSeconds, what: "The stuck notice was not dead-lettered");
        await holding.RollbackAsync();
        Assert.Equal(1, await conversation.Scalar(CountedSql));

        // Its batch is given up in Summaries' one error, naming the conversation and what brings its activity back (not the
        // database rule's, which named only the message type and the envelope), and counted as the batch's dead_letter.
        // (Marten's own entries for the timed-out command, with its parameters, are about the command.)
        var error = Assert.Single(logs.Entries, e => e.Level is >= LogLevel.Error and < LogLevel.None && !e.Category.StartsWith("Marten", StringComparison.Ordinal)
            && e.Message.Contains(conversation.Id.ToString(), StringComparison.Ordinal));
        Assert.Equal("ModularChat.Summaries.Jobs.NoticeBatchFailures", error.Category);
        Assert.Contains("sweep", error.Message, StringComparison.Ordinal);
        Assert.True(error.Exception is not null && DatabaseOutages.IsDatabaseAway(error.Exception), error.ToString());
        Assert.DoesNotContain(logs.Entries, e => e.Level is >= LogLevel.Error and < LogLevel.None && e.Category == typeof(DatabaseOutages).FullName);
        var counted = Assert.Single(noticeFailures.GetMeasurementSnapshot());
        Assert.Equal(("dead_letter", error.Exception!.GetType().Name), (counted.Tags["outcome"] as string, counted.Tags["error"] as string));
        // It is kept for Messaging:DeadLetterRetention (3 days in this fixture), then Wolverine deletes it.
        Assert.InRange(await conversation.Scalar(ExpiresInSecondsSql), TimeSpan.FromDays(3).TotalSeconds - 120, TimeSpan.FromDays(3).TotalSeconds);

        // Replayed (as an operator would) once the lock is gone: the notice is handled and counts the second message.
        await conversation.Scalar(ReplaySql);
        await Eventually.Until(() => conversation.Scalar(CountedSql), n => n == 2, seconds: Eventually.BackgroundSeconds, what: "The replayed notice was not handled");
        Assert.Equal(0, await conversation.Scalar(DeadLetteredSql));
    }

    [Fact]
    public async Task A_message_handled_on_its_own_is_dead_lettered_without_its_failure_count_so_a_replay_counts_afresh()
    {
        // As above, with a message Wolverine hands over alone, not in a batch: Summaries' clean-up after a deletion, which
        // deletes the conversation's activity row. The count of failures travels in the message's headers, which are
        // stored with it in the dead-letter store.
        // The node is alone on its database, so the replay is its to handle (with its bound and its command timeout).
        var database = await app.DatabaseOfItsOwnAsync("impatient");
        await using var node = await StartImpatientNodeAsync(app, database);
        await using var conversation = await CountedConversationAsync(app, node, "stuck-cleanup", database);
        // The check Summaries sends after its first write for a conversation would delete the row too, once the
        // conversation is gone: it must be done before the row is held.
        await Eventually.Until(() => app.PendingEnvelopesAbout([conversation.Id], database), n => n == 0, seconds: Eventually.BackgroundSeconds,
            what: "Messages about the conversation still queued");

        var holding = await conversation.HoldActivityAsync();
        Assert.Equal(HttpStatusCode.NoContent, (await conversation.Client.DeleteAsync($"/api/conversations/{conversation.Id}")).StatusCode);
        const string CleanUpDeadLetteredSql = DeadLetteredSql + " and message_type like '%ConversationDeleted'";
        await Eventually.Until(() => conversation.Scalar(CleanUpDeadLetteredSql), n => n == 1, seconds: Eventually.BackgroundSeconds, what: "The stuck clean-up was not dead-lettered");
        Assert.Equal(0, await conversation.Scalar(CleanUpDeadLetteredSql + $" and encode(body, 'escape') like '%{DatabaseOutages.FailuresWhileUpHeader}%'"));

        // Replayed while the row is still held: its first failure counts as the first, so it is tried again (not
        // dead-lettered at once, as with its stored count of 2), and handled once the row is let go.
        await conversation.Scalar(ReplaySql);
        await Eventually.Until(() => conversation.Scalar(CleanUpDeadLetteredSql), n => n == 0, seconds: Eventually.BackgroundSeconds, what: "The dead letter was not replayed");
        await Eventually.Until(() => conversation.Scalar(WaitingOnTheActivitySql), n => n > 0, seconds: Eventually.BackgroundSeconds, what: "The replayed clean-up did not run");
        // Its first attempt timed out and it is tried again (its attempts in the inbox), not dead-lettered. Not read from the
        // lock waits: the next attempt waits again 0.25 s later, a gap a busy machine's polling missed (then the second
        // attempt timed out too, and the replay was dead-lettered again).
        await Eventually.Until(() => conversation.Scalar(ReplayedCleanUpAttemptsSql), n => n >= 1, seconds: Eventually.BackgroundSeconds,
            what: "The replayed clean-up's first attempt did not fail");
        Assert.Equal(0, await conversation.Scalar(CleanUpDeadLetteredSql));
        await holding.RollbackAsync();
        await Eventually.Until(() => conversation.Scalar(CountedSql), n => n == 0, seconds: Eventually.BackgroundSeconds, what: "The replayed clean-up did not remove the activity");
        Assert.Equal(0, await conversation.Scalar(DeadLetteredSql));
    }

    [Fact]
    public async Task A_dead_lettered_message_is_not_marked_handled_afterwards_so_a_replay_that_comes_back_first_still_runs()
    {
        // The move to the dead-letter store takes the message's row out of the inbox; a replay puts it back (same id, same
        // queue) at the durability agent's next round, which can come at once. Before, completing the failed attempt wrote
        // "handled" for that id afterwards, in the background: a replay back first was marked handled before any node
        // claimed it and never ran (the earlier test's replayed clean-up, once in CI). Here a trigger keeps the row in the
        // inbox, as a replay back at once would have put it, so a late mark shows on it.
        var database = await app.DatabaseOfItsOwnAsync("dead_letter_race");
        await using var node = await StartImpatientNodeAsync(app, database);
        await using var conversation = await CountedConversationAsync(app, node, "race", database);
        await Eventually.Until(() => app.PendingEnvelopesAbout([conversation.Id], database), n => n == 0, seconds: Eventually.BackgroundSeconds,
            what: "Messages about the conversation still queued");
        // Summaries' clean-up of the conversation (each module handles the deletion in a queue of its own).
        const string Queue = "received_at like '%summarycleanuphandler%' and message_type like '%ConversationDeleted'";
        var cleanUp = $"modularchat.wolverine_incoming_envelopes where {Queue} and position(convert_to('{conversation.Id}', 'UTF8') in body) > 0";
        await conversation.Scalar("create or replace function modularchat.keep_in_the_inbox() returns trigger language plpgsql as $$ begin return null; end $$");
        await conversation.Scalar($"create trigger keep_in_the_inbox before delete on modularchat.wolverine_incoming_envelopes for each row when (old.received_at like '%summarycleanuphandler%' and old.message_type like '%ConversationDeleted' and position(convert_to('{conversation.Id}', 'UTF8') in old.body) > 0) execute function modularchat.keep_in_the_inbox()");
        try
        {
            var holding = await conversation.HoldActivityAsync();
            Assert.Equal(HttpStatusCode.NoContent, (await conversation.Client.DeleteAsync($"/api/conversations/{conversation.Id}")).StatusCode);
            await Eventually.Until(() => conversation.Scalar(DeadLetteredSql + " and message_type like '%ConversationDeleted'"), n => n == 1,
                seconds: Eventually.BackgroundSeconds, what: "The stuck clean-up was not dead-lettered");
            await holding.RollbackAsync();

            // The receiver's completion of the failed attempt (before: a "handled" mark within milliseconds) has long run.
            await Task.Delay(TimeSpan.FromSeconds(3));
            Assert.Equal(1, await conversation.Scalar($"select count(*) from {cleanUp}"));
            Assert.Equal(0, await conversation.Scalar($"select count(*) from {cleanUp} and status = 'Handled'"));
        }
        finally
        {
            await conversation.Scalar("drop trigger keep_in_the_inbox on modularchat.wolverine_incoming_envelopes");
            await conversation.Scalar($"delete from {cleanUp}");
        }
    }

    /// <summary>The attempts Wolverine's inbox records for Summaries' clean-up of the conversation (0 for none).</summary>
    private const string ReplayedCleanUpAttemptsSql =
        "select coalesce(max(attempts), 0)::bigint from modularchat.wolverine_incoming_envelopes where received_at like '%summarycleanuphandler%' and message_type like '%ConversationDeleted' and position(convert_to(@id::text, 'UTF8') in body) > 0";

    /// <summary>Sessions waiting for a lock on a row of the activity table (a handler behind the held row).</summary>
    private const string WaitingOnTheActivitySql =
        "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%conversationactivity%' and pid <> pg_backend_pid()";

    /// <summary>How many messages of the conversation <c>@id</c> Summaries' activity counts (its notices handled).</summary>
    private const string CountedSql = "select (data->>'LastSequence')::bigint from modularchat.mt_doc_conversationactivity where id = @id";

    /// <summary>In how many seconds the dead letters about the conversation expire (the soonest).</summary>
    private const string ExpiresInSecondsSql =
        "select extract(epoch from min(expires) - now())::bigint from modularchat.wolverine_dead_letters where encode(body, 'escape') like '%' || @id::text || '%'";

    /// <summary>Dead-lettered messages about the conversation.</summary>
    internal const string DeadLetteredSql = "select count(*) from modularchat.wolverine_dead_letters where encode(body, 'escape') like '%' || @id::text || '%'";

    /// <summary>Marks the dead-lettered messages about the conversation for replay, as an operator would (README).</summary>
    private const string ReplaySql = "update modularchat.wolverine_dead_letters set replayable = true where encode(body, 'escape') like '%' || @id::text || '%'";

    /// <summary>
    /// A new conversation of <paramref name="user"/> on <paramref name="node"/> whose first message Summaries' activity
    /// counts (its notice handled), watched directly on the node's <paramref name="database"/> (this fixture's unless given).
    /// </summary>
    internal static async Task<WatchedConversation> CountedConversationAsync(ConversationsApp app, IAlbaHost node, string user, string? database = null)
    {
        var client = Client(app, node, user);
        var created = await (await client.PostJson("/api/conversations", new { title = user })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        database ??= app.PostgresConnectionString;
        var conversation = new WatchedConversation(client, created.Id, await OpenAsync(database), await OpenAsync(database));
        await conversation.AppendAsync("first");
        await Eventually.Until(() => conversation.Scalar(CountedSql), n => n == 1, seconds: Eventually.BackgroundSeconds, what: "The first notice was not handled");
        return conversation;
    }

    internal static async Task<NpgsqlConnection> OpenAsync(string database)
    {
        var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        return connection;
    }

    /// <summary>
    /// A conversation with its client, a connection that reads the database and one that holds its activity row (so the
    /// reads stay outside the holding transaction: pg_stat_activity is read once per transaction).
    /// </summary>
    internal sealed class WatchedConversation(HttpClient client, Guid id, NpgsqlConnection observer, NpgsqlConnection holder) : IAsyncDisposable
    {
        public HttpClient Client => client;

        public Guid Id => id;

        public async Task AppendAsync(string content)
            => await (await client.PostJson($"/api/conversations/{id}/messages", new { role = "user", content })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);

        /// <summary>Locks the conversation's activity row, where Summaries' handlers wait, until the returned transaction ends.</summary>
        public async Task<NpgsqlTransaction> HoldActivityAsync()
        {
            var holding = await holder.BeginTransactionAsync();
            await Scalar("select 1 from modularchat.mt_doc_conversationactivity where id = @id for update", holder);
            return holding;
        }

        /// <summary>The bigint <paramref name="sql"/> returns with <c>@id</c> = the conversation (0 for none).</summary>
        public async Task<long> Scalar(string sql, NpgsqlConnection? on = null)
        {
            await using var command = new NpgsqlCommand(sql, on ?? observer);
            command.Parameters.AddWithValue("id", id);
            return await command.ExecuteScalarAsync() is long value ? value : 0;
        }

        public async ValueTask DisposeAsync()
        {
            client.Dispose();
            await observer.DisposeAsync();
            await holder.DisposeAsync();
        }
    }

    /// <summary>A node on <paramref name="database"/> whose commands time out after 3 s and whose messages may fail twice while the database answers.</summary>
    internal static Task<IAlbaHost> StartImpatientNodeAsync(ConversationsApp app, string database, Action<IServiceCollection>? services = null)
    {
        var shortTimeout = new NpgsqlConnectionStringBuilder(database) { CommandTimeout = 3 };
        return app.StartHostAsync(
            new Dictionary<string, string?>
            {
                ["ConnectionStrings:Postgres"] = shortTimeout.ConnectionString,
                ["Messaging:MaxAttemptsWhileDatabaseAnswers"] = "2",
            },
            services);
    }

    [Fact]
    public async Task A_statement_timing_out_on_a_row_another_connection_holds_is_logged_as_itself_not_as_PostgreSQL_unreachable()
    {
        // PostgreSQL answers throughout; the notice's handler waits on the held row past the node's command timeout (3 s),
        // twice, and the dead-lettering of its batch is logged with that timeout (by Summaries, which names its conversations;
        // Wolverine's own entry for it is Debug). Before, the outage log took it for an outage: "PostgreSQL is unreachable".
        var logs = new CapturedLogs(); // this node's only
        var database = await app.DatabaseOfItsOwnAsync("locked_rows");
        await using var node = await StartImpatientNodeAsync(app, database, services => services.AddSingleton<ILoggerProvider>(logs));
        await using var conversation = await CountedConversationAsync(app, node, "locked", database);
        var holding = await conversation.HoldActivityAsync();
        await conversation.AppendAsync("second");
        await Eventually.Until(() => conversation.Scalar(DeadLetteredSql), n => n == 1, seconds: Eventually.BackgroundSeconds, what: "The stuck notice was not dead-lettered");

        // Replayed once the row is let go (nothing left behind on the database); meanwhile the outage log's probe (every 2 s)
        // asked PostgreSQL, which answered.
        await holding.RollbackAsync();
        await conversation.Scalar(ReplaySql);
        await Eventually.Until(() => conversation.Scalar(CountedSql), n => n == 2, seconds: Eventually.BackgroundSeconds, what: "The replayed notice was not handled");

        Assert.Contains(logs.Entries, e => e.Category == "ModularChat.Summaries.Jobs.NoticeBatchFailures" && e.Level == LogLevel.Error
            && e.Exception is not null && DatabaseOutages.IsDatabaseAway(e.Exception));
        var outage = logs.Entries.Where(e => e.Category == typeof(DatabaseOutageLog).FullName && e.Level >= LogLevel.Warning).ToList();
        Assert.True(outage.Count == 0, $"The outage log wrote: {string.Join(" | ", outage.Select(e => e.Message))}");
        Assert.False(node.Services.GetRequiredService<DatabaseOutageLog>().Away);
    }

    [Fact]
    public async Task A_database_outage_is_logged_when_it_starts_and_ends_not_by_each_of_Wolverine_s_retries_and_other_errors_still_are()
    {
        var logs = new CapturedLogs(); // this node's only
        await using var proxy = PostgresProxy();
        await using var node = await StartNodeAsync(
            proxy, new() { [DatabaseOutageLog.IntervalSetting] = "00:00:05" }, services => services.AddSingleton<ILoggerProvider>(logs));
        var before = logs.Entries.Count();

        proxy.Cut();
        // Longer than one line's interval (5 s here): Wolverine's durability agents, listeners and leader election retry meanwhile.
        await Task.Delay(TimeSpan.FromSeconds(8));
        // An error of Wolverine's that is not the outage is written as it is, during the outage too.
        node.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Wolverine.Runtime.Agents.SomeAgent")
            .LogError(new InvalidOperationException("not the database"), "Something else failed");
        await Task.Delay(TimeSpan.FromSeconds(5));
        var written = logs.Entries.Skip(before).Where(e => e.Level is >= LogLevel.Warning and < LogLevel.None).ToList();
        proxy.Restore();

        var wolverine = written.Where(e => e.Category.StartsWith("Wolverine", StringComparison.Ordinal) || e.Category.StartsWith("JasperFx", StringComparison.Ordinal)).ToList();
        var aboutTheOutage = wolverine.Count(e => e.Exception is not null && DatabaseOutages.IsDatabaseAway(e.Exception));
        Assert.True(aboutTheOutage == 0, $"Wolverine's loggers wrote {aboutTheOutage} entries about the outage at Warning or above");
        Assert.Contains(wolverine, e => e.Level == LogLevel.Error && e.Exception?.Message == "not the database");
        await Eventually.Until(() => Task.FromResult(OutageEntries().Count(e => e.Message.StartsWith("PostgreSQL answers again", StringComparison.Ordinal))),
            n => n == 1, seconds: 60, what: "The end of the outage was not logged");
        var outage = OutageEntries().Where(e => e.Level >= LogLevel.Warning).ToList();
        Assert.StartsWith("PostgreSQL is unreachable", outage[0].Message, StringComparison.Ordinal);
        // When it started, and one line per 5 s while it lasted (13 s here, and up to the check that saw it end, 2 s later).
        Assert.InRange(outage.Count, 2, 5);
        Assert.All(outage.Skip(1), e => Assert.StartsWith("PostgreSQL is still unreachable", e.Message, StringComparison.Ordinal));

        List<LogEntry> OutageEntries() => logs.Entries.Where(e => e.Category == "ModularChat.Host.Infrastructure.DatabaseOutageLog").ToList();
    }

    [Fact]
    public async Task While_the_database_is_away_the_node_s_heartbeat_and_the_summary_backlog_count_each_log_one_warning_then_say_they_work_again()
    {
        // Both check every second here and keep that pace through the outage; each failed check logged a warning with its
        // stack trace (6 s away: ~6 each).
        var logs = new CapturedLogs(); // this node's only
        await using var proxy = PostgresProxy();
        await using var node = await StartNodeAsync(
            proxy,
            new Dictionary<string, string?> { ["Messaging:HealthCheckInterval"] = "00:00:01", ["Summaries:BacklogRefreshInterval"] = "00:00:01" },
            services => services.AddSingleton<ILoggerProvider>(logs));
        var before = logs.Entries.Count();

        proxy.Cut();
        await Task.Delay(TimeSpan.FromSeconds(6));
        proxy.Restore();

        string[] workers = ["ModularChat.Host.Nodes.NodeHeartbeat", "ModularChat.Summaries.Features.Sweep.SummaryBacklogMonitor"];
        await Eventually.Until(() => Task.FromResult(workers.Count(w => Entries(w).Any(e => e.Message.Contains("works again", StringComparison.Ordinal)))),
            n => n == workers.Length, seconds: 60, what: "The heartbeat and the backlog count did not both say they work again");
        foreach (var worker in workers)
        {
            var warnings = Entries(worker).Where(e => e.Level == LogLevel.Warning).ToList();
            Assert.Single(warnings, e => e.Exception is not null); // the first failure, with its exception
            Assert.InRange(warnings.Count, 1, 3); // then one line at 2 and at 4 failures in a row, without it
        }

        List<LogEntry> Entries(string category) => logs.Entries.Skip(before).Where(e => e.Category == category).ToList();
    }

    [Fact]
    public async Task While_the_database_is_away_Marten_s_failed_commands_are_written_at_Debug_and_its_other_errors_still_are_errors()
    {
        // Marten's command log (Marten.IDocumentStore) wrote an error with its stack trace for each command sent on a connection
        // the outage broke: the pool's connections, the batch of a commit. Its entries at every level, to see them.
        var logs = new CapturedLogs(); // this node's only
        await using var proxy = PostgresProxy();
        await using var node = await StartNodeAsync(proxy, new() { ["Logging:LogLevel:Marten"] = "Debug" }, services => services.AddSingleton<ILoggerProvider>(logs));
        var store = node.Services.GetRequiredService<IDocumentStore>();
        await using var throughProxy = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(app.PostgresConnectionString) { Host = "127.0.0.1", Port = proxy.Port }.ConnectionString);
        await throughProxy.OpenAsync();
        using var client = Client(app, node, "marten-outage");
        var conversation = await (await client.PostJson("/api/conversations", new { title = "outage" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        var messages = $"/api/conversations/{conversation.Id}/messages";
        await (await client.PostJson(messages, new { role = "user", content = "before the outage" })).ReadAs<AppendResponseDto>(HttpStatusCode.Created);
        var before = logs.Entries.Count();

        proxy.Cut();
        // A commit on a connection opened before the outage: the database is gone when its batch is sent.
        await using (var session = store.LightweightSession(SessionOptions.ForConnection(throughProxy)))
        {
            session.Store(new SummarySweepRecord { Id = $"outage-{Guid.NewGuid():N}" });
            var refused = await Assert.ThrowsAnyAsync<Exception>(() => session.SaveChangesAsync());
            Assert.True(DatabaseOutages.IsDatabaseAway(refused), refused.ToString());
        }

        await (await client.PostJson(messages, new { role = "user", content = "during the outage" })).ShouldBeProblem(503);
        await (await client.GetAsync(messages)).ShouldBeProblem(503);
        // A command that fails for another reason, on a connection of its own to PostgreSQL, is an error as before.
        await using (var direct = new NpgsqlConnection(app.PostgresConnectionString))
        {
            await direct.OpenAsync();
            await using var session = store.QuerySession(SessionOptions.ForConnection(direct));
            await Assert.ThrowsAnyAsync<Exception>(() => session.QueryAsync<int>("select 1 / 0"));
        }

        var written = logs.Entries.Skip(before).Where(e => e.Category == "Marten.IDocumentStore").ToList();
        proxy.Restore();

        var aboutTheOutage = written.Where(e => e.Exception is not null && DatabaseOutages.IsDatabaseAway(e.Exception)).ToList();
        Assert.True(aboutTheOutage.All(e => e.Level < LogLevel.Warning),
            $"Marten's command log wrote {aboutTheOutage.Count(e => e.Level >= LogLevel.Warning)} entries about the outage at Warning or above");
        Assert.Contains(aboutTheOutage, e => e.Level == LogLevel.Debug); // the commit's batch at least
        Assert.Contains(written, e => e.Level == LogLevel.Error && e.Exception?.GetBaseException() is PostgresException { SqlState: PostgresErrorCodes.DivisionByZero });
        await Eventually.Until(() => Task.FromResult(logs.Entries.Count(e => e.Category == typeof(DatabaseOutageLog).FullName && e.Message.StartsWith("PostgreSQL answers again", StringComparison.Ordinal))),
            n => n == 1, seconds: 60, what: "The end of the outage was not logged");
    }

    [Fact]
    public async Task While_the_database_is_away_the_summary_sweep_logs_one_warning_not_an_error_each_time_then_says_it_works_again_and_other_failures_stay_errors()
    {
        // A sweep every second: each one failed while PostgreSQL was away, an error with its stack trace each time. The node
        // is alone on its database, so its sweeps queue nothing of the other tests' conversations.
        var logs = new CapturedLogs(); // this node's only
        var database = await app.DatabaseOfItsOwnAsync("sweep_outage");
        await using var proxy = PostgresProxy();
        await using var node = await StartNodeAsync(
            proxy, new() { ["Summaries:Sweep:Interval"] = "00:00:01" }, services => services.AddSingleton<ILoggerProvider>(logs), database);
        await Eventually.Until(() => Task.FromResult(logs.Entries.Count(e => e.Category == typeof(SummarySweep).FullName && e.Message.Contains(" finished: ", StringComparison.Ordinal))),
            n => n > 0, seconds: Eventually.BackgroundSeconds, what: "No sweep ran before the outage");
        var before = logs.Entries.Count();

        proxy.Cut();
        await Task.Delay(TimeSpan.FromSeconds(8));
        var duringTheOutage = Sweep(before);
        proxy.Restore();

        var errors = duringTheOutage.Count(e => e.Level >= LogLevel.Error);
        Assert.True(errors == 0, $"The sweep service logged {errors} errors while the database was away");
        var warnings = duringTheOutage.Where(e => e.Level == LogLevel.Warning).ToList();
        Assert.Single(warnings, e => e.Exception is not null && DatabaseOutages.IsDatabaseAway(e.Exception)); // the first failure, with its exception
        Assert.InRange(warnings.Count, 1, 3); // then one line at 2 and at 4 failures in a row, without it (the sweeps draw apart: 1, 2, 4 s)
        await Eventually.Until(() => Task.FromResult(Sweep(before).Count(e => e.Level == LogLevel.Information && e.Message.Contains("works again", StringComparison.Ordinal))),
            n => n == 1, seconds: 60, what: "The sweep did not say it works again");

        // A failure that is not the database being away (here its table of the last sweep gone) is an error, each time.
        var afterTheOutage = logs.Entries.Count();
        await using (var direct = new NpgsqlConnection(database))
        {
            await direct.OpenAsync();
            await using var rename = new NpgsqlCommand("alter table modularchat.mt_doc_summarysweeprecord rename to mt_doc_summarysweeprecord_away", direct);
            await rename.ExecuteNonQueryAsync();
            try
            {
                await Eventually.Until(() => Task.FromResult(Sweep(afterTheOutage).Count(e => e.Level == LogLevel.Error
                        && e.Exception?.GetBaseException() is PostgresException { SqlState: PostgresErrorCodes.UndefinedTable })),
                    n => n >= 2, seconds: Eventually.BackgroundSeconds, what: "The sweep's failures with its table gone were not logged as errors");
            }
            finally
            {
                await using var back = new NpgsqlCommand("alter table modularchat.mt_doc_summarysweeprecord_away rename to mt_doc_summarysweeprecord", direct);
                await back.ExecuteNonQueryAsync();
            }
        }

        Assert.DoesNotContain(Sweep(afterTheOutage), e => e.Level == LogLevel.Warning);

        List<LogEntry> Sweep(int skip = 0) => logs.Entries.Skip(skip).Where(e => e.Category == typeof(SummarySweepService).FullName).ToList();
    }

    [Fact]
    public async Task A_timeout_starts_the_outage_only_once_PostgreSQL_does_not_answer_the_probe_either()
    {
        await using var proxy = PostgresProxy();
        var throughProxy = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString) { Host = "127.0.0.1", Port = proxy.Port };
        using var store = DocumentStore.For(throughProxy.ConnectionString);
        var logs = new CapturedLogs();
        using var loggers = LoggerFactory.Create(logging => logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        var outages = new DatabaseOutageLog(loggers.CreateLogger<DatabaseOutageLog>(), TimeProvider.System);
        var probe = new DatabaseOutageLog.Probe(outages, store, TimeProvider.System);
        var timeout = new NpgsqlException("Exception while reading from stream", new TimeoutException("Timeout during reading attempt"));

        // PostgreSQL answers select 1: the timeout was a slow statement, written as itself, and no outage.
        Assert.False(outages.Holds(timeout));
        await probe.CheckAsync(CancellationToken.None);
        Assert.False(outages.Suspected);
        Assert.False(outages.Away);

        // PostgreSQL stops answering (the relay holds every byte): the probe's select 1 gets no answer either, and the
        // timeout starts the outage within the probe's limit (5 s), not after Npgsql's cancel request: on a server that takes
        // connections but does not answer, that waits for PostgreSQL to drop the cancel's connection (authentication_timeout,
        // 60 s), which the probe waited out before.
        proxy.Stall();
        Assert.False(outages.Holds(timeout));
        var asked = Stopwatch.StartNew();
        await probe.CheckAsync(CancellationToken.None);
        Assert.True(asked.Elapsed < TimeSpan.FromSeconds(30), $"The probe of a database that does not answer took {asked.Elapsed}");
        Assert.True(outages.Away);
        Assert.True(outages.Holds(timeout));
        var started = Assert.Single(logs.Entries, e => e.Level >= LogLevel.Warning);
        Assert.StartsWith("PostgreSQL is unreachable (NpgsqlException: Exception while reading from stream)", started.Message, StringComparison.Ordinal);

        proxy.Restore();
        await probe.CheckAsync(CancellationToken.None);
        Assert.False(outages.Away);
    }

    /// <summary>A relay in front of the test database, to take it away from a node and give it back.</summary>
    private TcpProxy PostgresProxy()
    {
        var database = new NpgsqlConnectionStringBuilder(app.PostgresConnectionString);
        return new TcpProxy(database.Host!, database.Port);
    }

    /// <summary>A node of its own that reaches PostgreSQL through <paramref name="proxy"/>, on <paramref name="database"/> (this fixture's unless given).</summary>
    private Task<IAlbaHost> StartNodeAsync(
        TcpProxy proxy, Dictionary<string, string?>? settings = null, Action<IServiceCollection>? services = null, string? database = null)
    {
        var throughProxy = new NpgsqlConnectionStringBuilder(database ?? app.PostgresConnectionString) { Host = "127.0.0.1", Port = proxy.Port };
        return app.StartHostAsync(new Dictionary<string, string?>(settings ?? []) { ["ConnectionStrings:Postgres"] = throughProxy.ConnectionString }, services);
    }

    private static HttpClient Client(ConversationsApp app, IAlbaHost node, string user) => app.Client(node, ModularChatApp.NewUser(user));
}
