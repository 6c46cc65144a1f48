using Marten;
using ModularChat.BuildingBlocks.Messaging;
using Wolverine.Persistence.Durability;
using Wolverine.Persistence.Durability.DeadLetterManagement;
using Wolverine.Runtime;

namespace ModularChat.Summaries.Jobs;

/// <summary>A summarization job that failed on every attempt and was moved to the dead-letter store.</summary>
/// <param name="Id">The dead letter's id (to replay it).</param>
/// <param name="Attempts">Attempts made before it was dead-lettered.</param>
/// <param name="ReplayCount">How often it was replayed and failed again.</param>
/// <param name="Replayable">True once a replay was requested and the job is on its way back to the queue.</param>
public sealed record SummaryFailure(
    Guid Id,
    string? TenantId,
    Guid ConversationId,
    string Reason,
    long UpToSequence,
    string ExceptionType,
    string ExceptionMessage,
    DateTimeOffset? FailedAt,
    DateTimeOffset SentAt,
    int Attempts,
    int ReplayCount,
    bool Replayable);

/// <summary>
/// The summarization jobs in Wolverine's durable dead-letter store, one tenant's at a time: list, replay, and discard a
/// conversation's. The store is shared by every tenant (one database) and has no tenant column, so PostgreSQL first finds
/// the jobs whose stored envelope holds the tenant's header (or the conversation's id as text), and only those are read
/// and checked (their envelope's tenant, their job) before they are listed, replayed or discarded.
/// </summary>
public sealed class SummaryFailures(IWolverineRuntime runtime, IDocumentStore store)
{
    private const int ScanPageSize = 500;

    private IDeadLetters DeadLetters => runtime.Storage.DeadLetters;

    /// <summary>
    /// One page of the tenant's failed jobs, oldest first (by when they failed, then by id), those after
    /// <paramref name="after"/> when given; how many it has in all, and whether more follow the page. Keyset, not offset:
    /// failures replayed from an earlier page leave the list without moving the next page's start.
    /// </summary>
    public async Task<(IReadOnlyList<SummaryFailure> Items, int Total, bool More)> ListAsync(
        string tenantId, (DateTimeOffset FailedAt, Guid Id)? after, int pageSize, CancellationToken cancellationToken)
    {
        var all = await OfTenantAsync(tenantId, cancellationToken);
        var ordered = all.Select(x => ToFailure(x.Letter, x.Job)).OrderBy(PageKey);
        var rest = after is { } a ? ordered.Where(f => PageKey(f).CompareTo(a) > 0) : ordered;
        var page = rest.Take(pageSize + 1).ToList();
        return (page.Take(pageSize).ToList(), all.Count, page.Count > pageSize);
    }

    /// <summary>Where a failure stands in the list: when it failed (the oldest first), then its id.</summary>
    public static (DateTimeOffset FailedAt, Guid Id) PageKey(SummaryFailure failure) => (failure.FailedAt ?? DateTimeOffset.MinValue, failure.Id);

    /// <summary>
    /// Queues the tenant's failed jobs again: all of them when <paramref name="ids"/> is null, else those of the ids that are
    /// the tenant's summarization jobs (none for an empty list); answers how many.
    /// </summary>
    public async Task<int> ReplayAsync(string tenantId, IReadOnlyCollection<Guid>? ids, CancellationToken cancellationToken)
    {
        Guid[] ours;
        if (ids is null)
        {
            ours = (await OfTenantAsync(tenantId, cancellationToken)).Select(x => x.Letter.Id).ToArray();
        }
        else if (ids.Count == 0)
        {
            return 0;
        }
        else
        {
            // Ids take precedence over every other criterion in Wolverine's query: keep only the tenant's own jobs.
            var found = await DeadLetters.QueryAsync(new DeadLetterEnvelopeQuery(ids.ToArray()) { PageSize = ids.Count }, cancellationToken);
            ours = found.Envelopes.Where(e => e.MessageType == SummarizeConversation.Identity && e.Envelope.TenantId == tenantId).Select(e => e.Id).ToArray();
        }

        foreach (var batch in ours.Chunk(ScanPageSize))
        {
            await DeadLetters.ReplayAsync(new DeadLetterEnvelopeQuery(batch), cancellationToken);
        }

        return ours.Length;
    }

    /// <summary>
    /// Removes the failed jobs of a deleted conversation. Run at every deletion, so it does not read every tenant's dead
    /// letters: PostgreSQL finds those whose stored message names the conversation (a job's body holds its id as text),
    /// and only those are read and checked (the tenant's job of this conversation) before they go.
    /// </summary>
    public async Task DiscardAsync(string tenantId, Guid conversationId, CancellationToken cancellationToken)
    {
        var candidates = await NamingAsync(conversationId, cancellationToken);
        if (candidates.Length == 0)
        {
            return;
        }

        var found = await DeadLetters.QueryAsync(new DeadLetterEnvelopeQuery(candidates) { PageSize = candidates.Length }, cancellationToken);
        var ids = found.Envelopes
            .Where(e => e.MessageType == SummarizeConversation.Identity && e.Envelope.TenantId == tenantId && JobOf(e)?.ConversationId == conversationId)
            .Select(e => e.Id)
            .ToArray();
        if (ids.Length > 0)
        {
            await DeadLetters.DiscardAsync(new DeadLetterEnvelopeQuery(ids), cancellationToken);
        }
    }

    /// <summary>The ids of the summarization jobs in the dead-letter store whose stored body contains the conversation's id.</summary>
    private Task<Guid[]> NamingAsync(Guid conversationId, CancellationToken cancellationToken)
        => IdsAsync(new DeadLetterCriteria(SummarizeConversation.Identity, BodyContains: conversationId.ToString()), cancellationToken);

    /// <summary>The ids of the summarization jobs in the dead-letter store sent for <paramref name="tenantId"/>.</summary>
    private Task<Guid[]> OfTenantIdsAsync(string tenantId, CancellationToken cancellationToken)
        => IdsAsync(new DeadLetterCriteria(SummarizeConversation.Identity, Tenant: tenantId), cancellationToken);

    /// <summary>The ids of the letters <paramref name="criteria"/> choose, read at one moment.</summary>
    private async Task<Guid[]> IdsAsync(DeadLetterCriteria criteria, CancellationToken cancellationToken)
        => [.. (await DeadLetterRows.FindAsync(store, criteria, null, null, cancellationToken)).Select(p => p.Id)];

    /// <summary>
    /// Every failed summarization job of the tenant: those whose envelope's tenant header names it, found by PostgreSQL in one
    /// statement (so a replay that takes letters out meanwhile cannot make the scan skip one, as paging by offset could), read
    /// 500 at a time and kept when their envelope is the tenant's and their job can be read.
    /// </summary>
    private async Task<List<(DeadLetterEnvelope Letter, SummarizeConversation Job)>> OfTenantAsync(string tenantId, CancellationToken cancellationToken)
    {
        var found = new List<(DeadLetterEnvelope Letter, SummarizeConversation Job)>();
        foreach (var chunk in (await OfTenantIdsAsync(tenantId, cancellationToken)).Chunk(ScanPageSize))
        {
            var results = await DeadLetters.QueryAsync(new DeadLetterEnvelopeQuery(chunk) { PageSize = chunk.Length }, cancellationToken);
            foreach (var letter in results.Envelopes)
            {
                if (letter.MessageType == SummarizeConversation.Identity && letter.Envelope.TenantId == tenantId && JobOf(letter) is { } job)
                {
                    found.Add((letter, job));
                }
            }
        }

        return found;
    }

    /// <summary>The job of a dead letter: the store keeps the envelope with the message's serialized body, not the message.</summary>
    private SummarizeConversation? JobOf(DeadLetterEnvelope e)
    {
        if (e.Message is SummarizeConversation message)
        {
            return message;
        }

        if (e.Envelope.Message is SummarizeConversation carried)
        {
            return carried;
        }

        if (e.Envelope.Data is not { Length: > 0 })
        {
            return null;
        }

        try
        {
            return runtime.Options.DetermineSerializer(e.Envelope).ReadFromData(typeof(SummarizeConversation), e.Envelope) as SummarizeConversation;
        }
        catch (Exception ex) when (ex is System.Text.Json.JsonException or InvalidOperationException or NotSupportedException)
        {
            return null; // a body this version cannot read is not listed
        }
    }

    private static SummaryFailure ToFailure(DeadLetterEnvelope e, SummarizeConversation job)
        => new(e.Id, e.Envelope.TenantId, job.ConversationId, job.Reason, job.UpToSequence, e.ExceptionType, e.ExceptionMessage,
            e.FailedAt, e.SentAt, e.Envelope.Attempts, e.ReplayCount, e.Replayable);
}
