using System.Diagnostics.Metrics;
using System.Net;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Messaging;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Conversations.Features.Retention;
using Npgsql;
using Wolverine;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// A message that <see cref="DatabaseOutages"/> dead-letters after failing while the database answered (a statement timing
/// out on data another connection holds, on a node whose commands time out after 3 s and whose messages may fail twice)
/// is logged by its module's own error, naming its tenant and conversation and what stays undone, and counted there, not
/// by the rule's generic error. An event that several modules handle is reported by the module whose handler failed.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class DeadLetterReportTests(ConversationsApp app)
{
    [Fact]
    public async Task A_retention_step_dead_lettered_is_reported_by_Conversations_naming_its_tenant_and_conversation_and_counted()
    {
        var database = await app.DatabaseOfItsOwnAsync("dead_retention");
        var logs = new CapturedLogs(); // this node's only
        await using var node = await DatabaseOutageTests.StartImpatientNodeAsync(app, database, services => services.AddSingleton<ILoggerProvider>(logs));
        using var failures = new MetricCollector<long>(
            node.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.ConversationsBackgroundFailures);
        var conversationId = Guid.NewGuid();
        await using var observer = await DatabaseOutageTests.OpenAsync(database);
        await using var holder = await DatabaseOutageTests.OpenAsync(database);

        // A step first reads the conversation's current summary: with the table held, each attempt times out.
        await using (var holding = await holder.BeginTransactionAsync())
        {
            await ScalarAsync(holder, "lock table modularchat.mt_doc_summaryview in access exclusive mode", conversationId);
            await node.Services.GetRequiredService<IMessageBus>().PublishAsync(
                new ApplyRetention(conversationId), new DeliveryOptions { TenantId = RetentionTenants.Delete });
            await Eventually.Until(() => ScalarAsync(observer, DatabaseOutageTests.DeadLetteredSql, conversationId), n => n == 1,
                seconds: Eventually.BackgroundSeconds, what: "The stuck retention step was not dead-lettered");
            await holding.RollbackAsync();
        }

        var error = AssertReported(logs, conversationId, RetentionTenants.Delete, "ModularChat.Conversations.Features.Retention.RetentionDeadLetters");
        Assert.Contains("messages past the retention policy were not archived or deleted", error.Message, StringComparison.Ordinal);
        AssertCounted(failures, error, ("work", "retention"));
    }

    [Fact]
    public async Task A_clean_up_after_a_deletion_dead_lettered_is_reported_by_the_module_whose_handler_failed_naming_its_tenant_and_conversation_and_counted()
    {
        // Summaries' clean-up of the deletion waits on the conversation's activity row, held; Conversations' purge and
        // Search's clean-up handle the same event in queues of their own, and have reports of their own for it.
        var database = await app.DatabaseOfItsOwnAsync("dead_cleanup");
        var logs = new CapturedLogs();
        await using var node = await DatabaseOutageTests.StartImpatientNodeAsync(app, database, services => services.AddSingleton<ILoggerProvider>(logs));
        using var failures = new MetricCollector<long>(node.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.SummaryCleanupFailures);
        await using var conversation = await DatabaseOutageTests.CountedConversationAsync(app, node, "dead-cleanup", database);
        await Eventually.Until(() => app.PendingEnvelopesAbout([conversation.Id], database), n => n == 0, seconds: Eventually.BackgroundSeconds,
            what: "Messages about the conversation still queued");
        await using var observer = await DatabaseOutageTests.OpenAsync(database);
        var tenant = await TenantOfAsync(observer, conversation.Id);

        var holding = await conversation.HoldActivityAsync();
        Assert.Equal(HttpStatusCode.NoContent, (await conversation.Client.DeleteAsync($"/api/conversations/{conversation.Id}")).StatusCode);
        await Eventually.Until(() => conversation.Scalar(DatabaseOutageTests.DeadLetteredSql + " and message_type like '%ConversationDeleted'"), n => n == 1,
            seconds: Eventually.BackgroundSeconds, what: "The stuck clean-up was not dead-lettered");
        await holding.RollbackAsync();

        var error = AssertReported(logs, conversation.Id, tenant, "ModularChat.Summaries.Jobs.CleanupDeadLetters.OnDeletion");
        Assert.Contains("its summaries, activity and failed jobs remain", error.Message, StringComparison.Ordinal);
        AssertCounted(failures, error, ("work", "deletion"));
    }

    [Fact]
    public async Task A_search_clean_up_whose_retries_give_up_is_reported_by_Search_naming_its_tenant_and_conversation_and_counted()
    {
        // A trigger refuses the conversation's search tombstone: a database error while the database answers, which the
        // rule for other failures retries (100 ms, 1 s, 5 s), then dead-letters (ReportedDeadLetters.RetryOtherFailures). On a database of its own: search indexing, which
        // writes the same tombstone when it reads the deletion, meets the same refusal.
        var database = await app.DatabaseOfItsOwnAsync("dead_search_cleanup");
        var logs = new CapturedLogs();
        await using var node = await app.StartHostAsync(
            new Dictionary<string, string?> { ["ConnectionStrings:Postgres"] = database }, services => services.AddSingleton<ILoggerProvider>(logs));
        using var failures = new MetricCollector<long>(node.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.SearchCleanupFailures);
        await using var conversation = await DatabaseOutageTests.CountedConversationAsync(app, node, "dead-search-cleanup", database);
        await using var observer = await DatabaseOutageTests.OpenAsync(database);
        var tenant = await TenantOfAsync(observer, conversation.Id);
        await ScalarAsync(observer, $"""
            create or replace function modularchat.refuse_tombstone() returns trigger language plpgsql as $$
            begin
                if new.conversation_id = '{conversation.Id}' then raise exception 'tombstone refused by the test'; end if;
                return new;
            end $$;
            drop trigger if exists refuse_tombstone on modularchat.mc_search_deletions;
            create trigger refuse_tombstone before insert on modularchat.mc_search_deletions for each row execute function modularchat.refuse_tombstone();
            """, conversation.Id);

        Assert.Equal(HttpStatusCode.NoContent, (await conversation.Client.DeleteAsync($"/api/conversations/{conversation.Id}")).StatusCode);
        await Eventually.Until(() => conversation.Scalar(DatabaseOutageTests.DeadLetteredSql + " and message_type like '%ConversationDeleted'"), n => n == 1,
            seconds: Eventually.BackgroundSeconds, what: "The refused clean-up was not dead-lettered");

        var error = AssertReported(logs, conversation.Id, tenant, "ModularChat.Search.Projection.SearchCleanupDeadLetters.OnDeletion", databaseAway: false);
        Assert.Contains("search entries of a deleted conversation remain", error.Message, StringComparison.Ordinal);
        Assert.Contains("tombstone refused by the test", error.Message, StringComparison.Ordinal);
        AssertCounted(failures, error, ("event", "deletion"));
    }

    [Fact]
    public Task A_clean_up_that_fails_otherwise_than_by_the_database_away_is_retried_three_times_then_reported_by_its_module()
        // Summaries' clean-up has no failure rule of its own: a refused removal of the conversation's activity used to
        // dead-letter the deletion at its first failure, with Wolverine's entry alone.
        => AssertRefusedRemovalRetriedThenReportedAsync(
            "cleanup", "mt_doc_conversationactivity", MetricNames.SummaryCleanupFailures, "ModularChat.Summaries.Jobs.CleanupDeadLetters.OnDeletion",
            "its summaries, activity and failed jobs remain", ("work", "deletion"));

    [Fact]
    public Task A_purge_refused_by_the_database_is_retried_three_times_then_reported_by_Conversations()
        // The purge of the stream (at the deletion, or at a re-check while the daemon had not read the stream); nothing else
        // purges it. A node that has just started may not run its daemon yet: the purge would wait for it (5 min by default).
        => AssertRefusedRemovalRetriedThenReportedAsync(
            "purge", "mt_streams", MetricNames.ConversationsBackgroundFailures, "ModularChat.Conversations.Features.DeleteConversation.PurgeDeletedConversation",
            "the conversation's events stay in the database", ("work", "purge"), new() { ["Conversations:PurgeMaxWait"] = "00:00:02" });

    [Fact]
    public async Task A_retention_step_the_database_refuses_is_retried_three_times_then_reported_by_Conversations()
    {
        // The step removes the messages its summary covers (delete-after-summary, KeepLast 5: 1-5 of 10); the database
        // refuses their removal (an error while it answers, not a timeout), and the rule for other failures retries it.
        var database = await app.DatabaseOfItsOwnAsync("dead_refused_retention");
        var logs = new CapturedLogs();
        // A node started beside the fixture's runs no projections: its step goes without waiting for them.
        var settings = new Dictionary<string, string?> { ["ConnectionStrings:Postgres"] = database, ["Retention:MaxProjectionWait"] = "00:00:00" };
        await using var node = await app.StartHostAsync(settings, services => services.AddSingleton<ILoggerProvider>(logs));
        using var failures = new MetricCollector<long>(
            node.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.ConversationsBackgroundFailures);
        using var client = app.Client(node, ModularChatApp.NewUser("dead-refused-retention"), RetentionTenants.Delete);
        var created = await (await client.PostJson("/api/conversations", new { title = "refused retention" })).ReadAs<ConversationDto>(HttpStatusCode.Created);
        await using var observer = await DatabaseOutageTests.OpenAsync(database);
        await RefuseRemovalAsync(observer, "mt_doc_storedmessage", created.Id, "old.data::text like '%' || @id::text || '%'");

        // 10 messages: the summary at the first milestone covers them all, and retention follows it.
        var batch = new { messages = Enumerable.Range(1, 10).Select(i => new { role = i % 2 == 1 ? "user" : "assistant", content = $"Message {i} of a refused retention." }) };
        await (await client.PostJson($"/api/conversations/{created.Id}/messages/batch", batch)).ReadAs<BatchResponseDto>(HttpStatusCode.Created);
        await Eventually.Until(() => ScalarAsync(observer, DatabaseOutageTests.DeadLetteredSql, created.Id), n => n == 1,
            seconds: Eventually.BackgroundSeconds, what: "The refused retention step was not dead-lettered");

        Assert.Equal(4, await ScalarAsync(observer, "select last_value from modularchat.refused_attempts", created.Id)); // the first attempt and 3 retries
        var error = AssertReported(logs, created.Id, RetentionTenants.Delete, "ModularChat.Conversations.Features.Retention.RetentionDeadLetters", databaseAway: false);
        Assert.Contains("messages past the retention policy were not archived or deleted", error.Message, StringComparison.Ordinal);
        Assert.Contains("removal refused by the test", error.Message, StringComparison.Ordinal);
        AssertCounted(failures, error, ("work", "retention"));
        var messages = await (await client.GetAsync($"/api/conversations/{created.Id}/messages?limit=100")).ReadAs<JsonElement>(HttpStatusCode.OK);
        Assert.Equal(10, messages.GetProperty("items").GetArrayLength()); // nothing was removed
    }

    /// <summary>
    /// A trigger on <paramref name="table"/> that refuses to remove the rows matching <paramref name="condition"/> (in which
    /// <c>@id</c> is <paramref name="conversationId"/>), counting each refused statement in <c>modularchat.refused_attempts</c>
    /// (a sequence: a rolled-back transaction does not give its numbers back).
    /// </summary>
    private static Task RefuseRemovalAsync(NpgsqlConnection connection, string table, Guid conversationId, string condition)
        => ScalarAsync(connection, $"""
            drop sequence if exists modularchat.refused_attempts;
            create sequence modularchat.refused_attempts;
            create or replace function modularchat.refuse_removal() returns trigger language plpgsql as $$
            begin
                if {condition.Replace("@id", $"'{conversationId}'", StringComparison.Ordinal)} then
                    perform nextval('modularchat.refused_attempts');
                    raise exception 'removal refused by the test';
                end if;
                return old;
            end $$;
            drop trigger if exists refuse_removal on modularchat.{table};
            create trigger refuse_removal before delete on modularchat.{table} for each row execute function modularchat.refuse_removal();
            """, conversationId);

    /// <summary>
    /// Deletes a conversation on a node of its own whose database refuses, by a trigger, to remove the conversation's row of
    /// <paramref name="table"/> (an error while the database answers, not a timeout): the work is tried 4 times (the rule
    /// for other failures, ReportedDeadLetters.RetryOtherFailures; each attempt takes a number from a sequence, which a
    /// rolled-back transaction does not give back), then dead-lettered and reported by the module named by
    /// <paramref name="category"/>, saying what stays <paramref name="undone"/>, and counted with <paramref name="work"/>.
    /// </summary>
    private async Task AssertRefusedRemovalRetriedThenReportedAsync(
        string name, string table, string metric, string category, string undone, (string Key, string Value) work,
        Dictionary<string, string?>? settings = null)
    {
        var database = await app.DatabaseOfItsOwnAsync("dead_refused_" + name);
        var logs = new CapturedLogs();
        var configuration = new Dictionary<string, string?>(settings ?? []) { ["ConnectionStrings:Postgres"] = database };
        await using var node = await app.StartHostAsync(configuration, services => services.AddSingleton<ILoggerProvider>(logs));
        using var failures = new MetricCollector<long>(node.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, metric);
        await using var conversation = await DatabaseOutageTests.CountedConversationAsync(app, node, "dead-refused-" + name, database);
        await using var observer = await DatabaseOutageTests.OpenAsync(database);
        var tenant = await TenantOfAsync(observer, conversation.Id);
        // The first notice also queued a check that the conversation still exists (VerifySummarizedConversation). Handled
        // after the deletion, on two busy cores, it cleaned up too, was refused as well and was dead-lettered beside the
        // work followed here (two letters, and twice the refused attempts).
        await Eventually.Until(() => app.PendingEnvelopesAbout([conversation.Id], database), n => n == 0, Eventually.BackgroundSeconds,
            "Messages about the conversation were still queued");
        await RefuseRemovalAsync(observer, table, conversation.Id, "old.id = @id");

        Assert.Equal(HttpStatusCode.NoContent, (await conversation.Client.DeleteAsync($"/api/conversations/{conversation.Id}")).StatusCode);
        await Eventually.Until(() => conversation.Scalar(DatabaseOutageTests.DeadLetteredSql), n => n == 1,
            seconds: Eventually.BackgroundSeconds, what: "The refused work was not dead-lettered");

        Assert.Equal(4, await conversation.Scalar("select last_value from modularchat.refused_attempts")); // the first attempt and 3 retries
        var error = AssertReported(logs, conversation.Id, tenant, category, databaseAway: false);
        Assert.Contains(undone, error.Message, StringComparison.Ordinal);
        Assert.Contains("removal refused by the test", error.Message, StringComparison.Ordinal);
        AssertCounted(failures, error, work);
    }

    /// <summary>
    /// The one error about the conversation (Marten's own entries for the timed-out command are about the command), from
    /// <paramref name="category"/>, naming the tenant, with the database error; none from the rule's generic entry.
    /// </summary>
    private static LogEntry AssertReported(CapturedLogs logs, Guid conversationId, string tenant, string category, bool databaseAway = true)
    {
        Assert.DoesNotContain(logs.Entries, e => e.Level is >= LogLevel.Error and < LogLevel.None && e.Category == typeof(DatabaseOutages).FullName);
        var error = Assert.Single(logs.Entries, e => e.Level is >= LogLevel.Error and < LogLevel.None && !e.Category.StartsWith("Marten", StringComparison.Ordinal)
            && e.Message.Contains(conversationId.ToString(), StringComparison.Ordinal));
        Assert.Equal(category, error.Category);
        Assert.Contains($"of tenant {tenant}", error.Message, StringComparison.Ordinal);
        Assert.Contains("replaying the dead letter", error.Message, StringComparison.Ordinal);
        Assert.True(error.Exception is not null && DatabaseOutages.IsDatabaseAway(error.Exception) == databaseAway, error.ToString());
        return error;
    }

    /// <summary>One count of the dead letter, tagged with its outcome, the error's type and <paramref name="work"/>.</summary>
    private static void AssertCounted(MetricCollector<long> failures, LogEntry error, (string Key, string Value) work)
    {
        var counted = Assert.Single(failures.GetMeasurementSnapshot());
        Assert.Equal(("dead_letter", error.Exception!.GetType().Name, work.Value),
            (counted.Tags["outcome"] as string, counted.Tags["error"] as string, counted.Tags[work.Key] as string));
    }

    private static async Task<string> TenantOfAsync(NpgsqlConnection connection, Guid conversationId)
    {
        await using var command = new NpgsqlCommand("select tenant_id from modularchat.mt_streams where id = @id", connection);
        command.Parameters.AddWithValue("id", conversationId);
        return (string)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>The bigint <paramref name="sql"/> returns with <c>@id</c> = <paramref name="conversationId"/> (0 for none).</summary>
    private static async Task<long> ScalarAsync(NpgsqlConnection connection, string sql, Guid conversationId)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        command.Parameters.AddWithValue("id", conversationId);
        return await command.ExecuteScalarAsync() is long value ? value : 0;
    }
}
