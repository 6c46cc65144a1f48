using Marten;
using ModularChat.BuildingBlocks.Messaging;
using Wolverine.Persistence.Durability;
using Wolverine.Persistence.Durability.DeadLetterManagement;
using Wolverine.Runtime;

namespace ModularChat.Host.DeadLetters;

/// <summary>A background message that failed for good and waits in the dead-letter store.</summary>
/// <param name="Id">The letter's id (the envelope's), to replay or discard it.</param>
/// <param name="MessageType">Wolverine's name of the message type (its full .NET name).</param>
/// <param name="TenantId">The tenant the message was sent for, if any.</param>
/// <param name="Queue">The local queue whose handler failed (<c>local://...</c>): where a replay sends it.</param>
/// <param name="Attempts">Attempts made before it was dead-lettered.</param>
/// <param name="Replayable">True once a replay was requested and the message is on its way back to its queue.</param>
/// <param name="ReplayCount">How often it was replayed and failed again.</param>
public sealed record DeadLetterView(
    Guid Id,
    string MessageType,
    string? TenantId,
    string? Queue,
    string? ExceptionType,
    string? ExceptionMessage,
    DateTimeOffset? FailedAt,
    DateTimeOffset SentAt,
    int Attempts,
    bool Replayable,
    int ReplayCount);

/// <summary>
/// Every tenant's dead letters, for the service's operators: list them, replay them (each goes back to its queue and is
/// handled as new, as the <c>replayable</c> flag does by hand), discard them. Tenants' administrators have their summary
/// jobs' alone (<c>/api/admin/summaries/failures</c>). The table has no tenant column: a tenant filter finds the letters
/// whose stored envelope holds the tenant's header (<see cref="DeadLetterRows.TenantHeader"/>), and keeps those whose
/// envelope, read, is the tenant's.
/// </summary>
internal sealed class DeadLetterAdmin(IWolverineRuntime runtime, IDocumentStore store)
{
    /// <summary>How many letters a page holds unless the caller asks for another number.</summary>
    public const int DefaultPageSize = 50;

    /// <summary>The most letters a page holds, and the most ids one request may name.</summary>
    public const int MaxPageSize = 500;

    private IDeadLetters DeadLetters => runtime.Storage.DeadLetters;

    /// <summary>
    /// One page of the letters <paramref name="criteria"/> choose, oldest failure first, those after <paramref name="after"/>
    /// when given; the position of the page's last letter when more follow.
    /// </summary>
    public async Task<(IReadOnlyList<DeadLetterView> Items, DeadLetterPosition? Next)> ListAsync(
        DeadLetterCriteria criteria, DeadLetterPosition? after, int limit, CancellationToken cancellationToken)
    {
        var page = new List<(DeadLetterPosition Position, DeadLetterEnvelope Letter)>();
        var from = after;
        while (page.Count <= limit)
        {
            // A letter found may be gone when it is read (replayed or discarded meanwhile): read on until the page is full or
            // nothing is left.
            var wanted = limit + 1 - page.Count;
            var rows = await DeadLetterRows.FindAsync(store, criteria, from, wanted, cancellationToken);
            page.AddRange(await ReadAsync(rows, criteria.Tenant, cancellationToken));
            if (rows.Count < wanted)
            {
                break;
            }

            from = rows[^1];
        }

        var items = page.Take(limit).ToList();
        return (items.Select(x => View(x.Letter)).ToList(), page.Count > limit ? items[^1].Position : null);
    }

    /// <summary>
    /// Queues letters again: those of <paramref name="ids"/> that are in the store (none for an empty list), or, when it
    /// is null, every letter <paramref name="criteria"/> choose; answers how many.
    /// </summary>
    public async Task<int> ReplayAsync(IReadOnlyCollection<Guid>? ids, DeadLetterCriteria criteria, CancellationToken cancellationToken)
    {
        var chosen = ids is null
            ? await ChosenAsync(criteria, cancellationToken)
            : await ExistingAsync(ids, cancellationToken);
        // Never with an empty list: Wolverine reads no ids as no criterion, and would replay every letter.
        foreach (var chunk in chosen.Chunk(MaxPageSize))
        {
            await DeadLetters.ReplayAsync(new DeadLetterEnvelopeQuery(chunk), cancellationToken);
        }

        return chosen.Length;
    }

    /// <summary>Deletes the letters of <paramref name="ids"/> that are in the store for good; answers how many.</summary>
    public async Task<int> DiscardAsync(IReadOnlyCollection<Guid> ids, CancellationToken cancellationToken)
    {
        var chosen = await ExistingAsync(ids, cancellationToken);
        foreach (var chunk in chosen.Chunk(MaxPageSize))
        {
            await DeadLetters.DiscardAsync(new DeadLetterEnvelopeQuery(chunk), cancellationToken);
        }

        return chosen.Length;
    }

    private async Task<Guid[]> ExistingAsync(IReadOnlyCollection<Guid> ids, CancellationToken cancellationToken)
    {
        if (ids.Count == 0)
        {
            return [];
        }

        var found = await DeadLetters.QueryAsync(new DeadLetterEnvelopeQuery([.. ids]) { PageSize = ids.Count }, cancellationToken);
        return [.. found.Envelopes.Select(e => e.Id)];
    }

    private async Task<Guid[]> ChosenAsync(DeadLetterCriteria criteria, CancellationToken cancellationToken)
    {
        var rows = await DeadLetterRows.FindAsync(store, criteria, null, null, cancellationToken);
        if (criteria.Tenant is not { } tenant)
        {
            return [.. rows.Select(r => r.Id)];
        }

        var ours = new List<Guid>();
        foreach (var chunk in rows.Chunk(MaxPageSize))
        {
            ours.AddRange((await ReadAsync(chunk, tenant, cancellationToken)).Select(x => x.Letter.Id));
        }

        return [.. ours];
    }

    /// <summary>The letters of <paramref name="rows"/> still in the store, in their order, those of <paramref name="tenant"/> alone when given.</summary>
    private async Task<List<(DeadLetterPosition Position, DeadLetterEnvelope Letter)>> ReadAsync(
        IReadOnlyList<DeadLetterPosition> rows, string? tenant, CancellationToken cancellationToken)
    {
        if (rows.Count == 0)
        {
            return [];
        }

        var found = await DeadLetters.QueryAsync(
            new DeadLetterEnvelopeQuery([.. rows.Select(r => r.Id)]) { PageSize = rows.Count }, cancellationToken);
        var byId = found.Envelopes.ToDictionary(e => e.Id);
        return [.. rows
            .Where(r => byId.TryGetValue(r.Id, out var letter) && (tenant is null || letter.Envelope.TenantId == tenant))
            .Select(r => (r, byId[r.Id]))];
    }

    private static DeadLetterView View(DeadLetterEnvelope e)
        => new(e.Id, e.MessageType ?? "unknown", e.Envelope.TenantId, e.Envelope.Destination?.ToString(), e.ExceptionType, e.ExceptionMessage,
            e.FailedAt, e.SentAt, e.Envelope.Attempts, e.Replayable, e.ReplayCount);
}
