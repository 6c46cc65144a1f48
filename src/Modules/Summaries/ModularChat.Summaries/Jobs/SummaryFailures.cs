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

/// <summary>The summarization jobs in Wolverine's durable dead-letter store: list, replay, and discard a conversation's.</summary>
public sealed class SummaryFailures(IWolverineRuntime runtime)
{
    private IDeadLetters DeadLetters => runtime.Storage.DeadLetters;

    /// <summary>One page (1-based) of failed jobs, oldest first, and how many there are in all.</summary>
    public async Task<(IReadOnlyList<SummaryFailure> Items, int Total)> ListAsync(int page, int pageSize, CancellationToken cancellationToken)
    {
        var results = await DeadLetters.QueryAsync(
            new DeadLetterEnvelopeQuery { MessageType = SummarizeConversation.Identity, PageNumber = page, PageSize = pageSize }, cancellationToken);
        return (results.Envelopes.Select(e => (Letter: e, Job: JobOf(e))).Where(x => x.Job is not null)
            .Select(x => ToFailure(x.Letter, x.Job!)).ToList(), results.TotalCount);
    }

    /// <summary>Queues the failed jobs again (all of them, or those with <paramref name="ids"/>); answers how many.</summary>
    public async Task<int> ReplayAsync(IReadOnlyCollection<Guid>? ids, CancellationToken cancellationToken)
    {
        if (ids is { Count: > 0 })
        {
            // Ids take precedence over every other criterion in Wolverine's query: keep only our own jobs.
            var found = await DeadLetters.QueryAsync(new DeadLetterEnvelopeQuery(ids.ToArray()) { PageSize = ids.Count }, cancellationToken);
            var ours = found.Envelopes.Where(e => e.MessageType == SummarizeConversation.Identity).Select(e => e.Id).ToArray();
            if (ours.Length > 0)
            {
                await DeadLetters.ReplayAsync(new DeadLetterEnvelopeQuery(ours), cancellationToken);
            }

            return ours.Length;
        }

        var all = await DeadLetters.QueryAsync(new DeadLetterEnvelopeQuery { MessageType = SummarizeConversation.Identity, PageSize = 1 }, cancellationToken);
        if (all.TotalCount > 0)
        {
            await DeadLetters.ReplayAsync(new DeadLetterEnvelopeQuery { MessageType = SummarizeConversation.Identity, PageSize = 0 }, cancellationToken);
        }

        return all.TotalCount;
    }

    /// <summary>Removes the failed jobs of a deleted conversation.</summary>
    public async Task DiscardAsync(string tenantId, Guid conversationId, CancellationToken cancellationToken)
    {
        var ids = new List<Guid>();
        for (var page = 1; ; page++)
        {
            var results = await DeadLetters.QueryAsync(
                new DeadLetterEnvelopeQuery { MessageType = SummarizeConversation.Identity, PageNumber = page, PageSize = 500 }, cancellationToken);
            ids.AddRange(results.Envelopes
                .Where(e => e.Envelope.TenantId == tenantId && JobOf(e)?.ConversationId == conversationId)
                .Select(e => e.Id));
            if (results.Envelopes.Count < 500)
            {
                break;
            }
        }

        if (ids.Count > 0)
        {
            await DeadLetters.DiscardAsync(new DeadLetterEnvelopeQuery(ids.ToArray()), cancellationToken);
        }
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
