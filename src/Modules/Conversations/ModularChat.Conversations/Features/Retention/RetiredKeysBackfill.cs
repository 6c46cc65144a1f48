using Marten;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.Conversations.Domain;
using Npgsql;
using NpgsqlTypes;

namespace ModularChat.Conversations.Features.Retention;

/// <summary>
/// At start-up, in the background: records the idempotency key (<see cref="RetiredExternalId"/>) of every archived message
/// that has an external id and no key. Builds before 2026-12-03 archived messages without one, so after an upgrade a retried
/// append (or an import sent again) with such an id would store the message a second time. The keys of messages those builds
/// deleted are gone with them.
/// </summary>
/// <remarks>
/// The first complete pass reads the whole archive; each complete pass then records where the next one starts
/// (<see cref="RetiredKeysBackfillMark"/>: its own start on PostgreSQL's clock, less <see cref="Overlap"/> for
/// transactions still open then), and later starts read only the rows written since, through an index on the time a row
/// was written. So a start no longer scans an archive that only grows, and rows an older build archives during a
/// rolling upgrade are still found by the next start. Several nodes starting at once write the same keys (a store is
/// an upsert) and each its own mark, any of which is safe. A conversation deleted while its keys are written may keep a
/// few orphan keys (small rows nothing reads). A node that stops during a pass reads no further page (the page it is
/// writing is stored) and records no mark: the next start of any node reads on from the last complete pass.
/// </remarks>
internal sealed partial class RetiredKeysBackfill(IDocumentStore store, NodeStopping nodeStopping, ILogger<RetiredKeysBackfill> logger)
    : SharedBackgroundWork(nodeStopping)
{
    private const int Page = 1000;

    protected override async Task ExecuteAsync(CancellationToken newWork, CancellationToken stoppingToken)
    {
        try
        {
            var recorded = await RunAsync(stoppingToken, newWork);
            if (recorded > 0)
            {
                LogRecorded(logger, recorded);
            }
        }
        catch (Exception e) when (e is NpgsqlException or Marten.Exceptions.MartenCommandException or InvalidOperationException && !stoppingToken.IsCancellationRequested)
        {
            LogFailed(logger, e); // the next start tries again
        }
    }

    /// <summary>
    /// How far before a pass's start the next pass reads again: a row is stamped with its transaction's start, so a
    /// transaction that began before the pass and committed after it wrote rows the pass did not see, stamped before it.
    /// Archiving transactions take seconds.
    /// </summary>
    internal static readonly TimeSpan Overlap = TimeSpan.FromHours(1);

    /// <summary>Records the missing keys of the rows archived since the last complete pass, a page at a time; returns how many.</summary>
    /// <param name="cancellationToken">Ends the pass where it is.</param>
    /// <param name="newWork">Ends the pass before its next page (the node stops).</param>
    public async Task<int> RunAsync(CancellationToken cancellationToken, CancellationToken newWork = default)
    {
        newWork.ThrowIfCancellationRequested(); // a command beside the nodes (NodeStopping.RunsSharedWork) reads nothing
        RetiredKeysBackfillMark? mark;
        await using (var session = store.QuerySession())
        {
            mark = await session.LoadAsync<RetiredKeysBackfillMark>(RetiredKeysBackfillMark.Archive, cancellationToken);
        }

        var schema = store.Options.DatabaseSchemaName;
        var since = mark is null ? "" : "and a.mt_last_modified >= @from"; // no mark: the whole archive
        var sql = $"""
            select a.tenant_id, a.id, a.conversation_id, a.sequence, a.data ->> 'ExternalId', (a.data ->> 'TokenCount')::int, (a.data ->> 'CreatedAt')::timestamptz
            from {schema}.mt_doc_archivedmessage a
            where a.data ->> 'ExternalId' is not null
              {since}
              and not exists (select 1 from {schema}.mt_doc_retiredexternalid r where r.tenant_id = a.tenant_id and r.id = a.id)
            limit {Page}
            """;

        DateTimeOffset startedAt;
        await using (var connection = await store.OpenConnectionAsync(cancellationToken))
        await using (var now = new NpgsqlCommand("select now()", connection))
        {
            startedAt = new DateTimeOffset((DateTime)(await now.ExecuteScalarAsync(cancellationToken))!, TimeSpan.Zero); // timestamptz reads as UTC
        }

        var recorded = 0;
        while (true)
        {
            newWork.ThrowIfCancellationRequested();
            var missing = new List<(string Tenant, RetiredExternalId Key)>();
            await using (var connection = await store.OpenConnectionAsync(cancellationToken))
            await using (var command = new NpgsqlCommand(sql, connection))
            {
                if (mark is not null)
                {
                    command.Parameters.Add(new NpgsqlParameter("from", NpgsqlDbType.TimestampTz) { Value = mark.ReadFrom });
                }

                await using var reader = await command.ExecuteReaderAsync(cancellationToken);
                while (await reader.ReadAsync(cancellationToken))
                {
                    missing.Add((reader.GetString(0), new RetiredExternalId
                    {
                        Id = reader.GetGuid(1),
                        ConversationId = reader.GetGuid(2),
                        Sequence = reader.GetInt64(3),
                        ExternalId = reader.GetString(4),
                        TokenCount = reader.GetInt32(5),
                        CreatedAt = reader.GetFieldValue<DateTimeOffset>(6),
                    }));
                }
            }

            foreach (var tenant in missing.GroupBy(m => m.Tenant, StringComparer.Ordinal))
            {
                await using var session = store.LightweightSession(tenant.Key);
                session.Store(tenant.Select(m => m.Key).ToArray());
                await session.SaveChangesAsync(cancellationToken);
            }

            recorded += missing.Count;
            if (missing.Count < Page)
            {
                break;
            }
        }

        await using (var session = store.LightweightSession())
        {
            session.Store(new RetiredKeysBackfillMark { ReadFrom = startedAt - Overlap, CompletedAt = startedAt });
            await session.SaveChangesAsync(cancellationToken);
        }

        return recorded;
    }

    [LoggerMessage(Level = LogLevel.Information,
        Message = "Recorded the idempotency keys of {Count} archived messages (archived by a build that kept none): a retry with their external ids answers the original")]
    private static partial void LogRecorded(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not record the idempotency keys of messages archived by an older build; the next start tries again")]
    private static partial void LogFailed(ILogger logger, Exception exception);
}
