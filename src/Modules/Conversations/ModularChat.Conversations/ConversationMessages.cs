using System.Runtime.CompilerServices;
using Marten;
using Mediator;
using Npgsql;
using NpgsqlTypes;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.BuildingBlocks.Persistence;
using ModularChat.BuildingBlocks.Tenancy;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;
using ModularChat.Conversations.Features;
using ModularChat.Conversations.Features.AppendMessage;

namespace ModularChat.Conversations;

/// <summary>The Conversations module's side of <see cref="IConversationMessages"/>.</summary>
internal sealed class ConversationMessages(IDocumentStore store, IServiceScopeFactory scopes) : IConversationMessages
{
    public async Task<ConversationInfo?> FindAsync(string tenantId, Guid conversationId, CancellationToken cancellationToken = default)
    {
        await using var session = store.QuerySession(tenantId);
        var c = await session.LoadAsync<Conversation>(conversationId, cancellationToken);
        return c is null ? null : new ConversationInfo(c.Id, c.Title, c.MessageCount, c.TotalTokens, c.CreatedAt, c.LastActivityAt, c.ClientVersion)
        {
            Retained = c.Retained.Select(r => new RetainedMessages(r.Action, r.FromSequence, r.ToSequence)).ToList(),
            Metadata = c.Metadata,
        };
    }

    public async Task<IReadOnlyList<Guid>> FindIdsByMetadataAsync(
        string tenantId, IReadOnlyCollection<KeyValuePair<string, string>> metadata, int limit, CancellationToken cancellationToken = default)
    {
        await using var session = store.QuerySession(tenantId);
        return await session.Query<Conversation>().WithMetadata(metadata)
            .OrderByDescending(c => c.LastActivityAt).ThenByDescending(c => c.Id)
            .Select(c => c.Id)
            .Take(limit)
            .ToListAsync(cancellationToken);
    }

    /// <summary>
    /// The statement that reads a page of conversations with messages across tenants (<c>@tenant</c>'s alone with
    /// <paramref name="oneTenant"/>), in the primary key's order (tenant, id), after <c>(@afterTenant, @afterId)</c> with
    /// <paramref name="afterKey"/>: a range of the primary key, under any plan. Each condition is in the text only when it
    /// applies; before, <c>@p is null or ...</c> made the range an index condition only in plans made for the values, and
    /// a plan made once for all executions (Npgsql prepares statements it runs often) would scan the whole table.
    /// </summary>
    internal static string TalliesSql(string table, bool oneTenant, bool afterKey)
    {
        var where = new List<string> { "(data ->> 'MessageCount')::bigint > 0" };
        if (oneTenant)
        {
            where.Add("tenant_id = @tenant");
        }

        if (afterKey)
        {
            where.Add("(tenant_id, id) > (@afterTenant, @afterId)");
        }

        return $"""
            select tenant_id, id, (data ->> 'MessageCount')::bigint, (data ->> 'TotalTokens')::bigint, (data ->> 'LastActivityAt')::timestamptz
            from {table}
            where {string.Join(" and ", where)}
            order by tenant_id, id
            limit @limit
            """;
    }

    public async Task<IReadOnlyList<ConversationTally>> ListTalliesAsync(
        string? tenantId, (string TenantId, Guid ConversationId)? after, int limit, CancellationToken cancellationToken = default)
    {
        var sql = TalliesSql(store.Options.Schema.For<Conversation>(), tenantId is not null, after is not null);
        await using var connection = await store.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand(sql, connection);
        if (tenantId is not null)
        {
            command.Parameters.Add(new NpgsqlParameter("tenant", NpgsqlDbType.Varchar) { Value = tenantId });
        }

        if (after is { } last)
        {
            command.Parameters.Add(new NpgsqlParameter("afterTenant", NpgsqlDbType.Varchar) { Value = last.TenantId });
            command.Parameters.Add(new NpgsqlParameter("afterId", NpgsqlDbType.Uuid) { Value = last.ConversationId });
        }

        command.Parameters.AddWithValue("limit", limit);
        var tallies = new List<ConversationTally>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            tallies.Add(new ConversationTally(reader.GetString(0), reader.GetGuid(1), reader.GetInt64(2), reader.GetInt64(3),
                reader.GetFieldValue<DateTimeOffset>(4)));
        }

        return tallies;
    }

    public IAsyncEnumerable<IReadOnlyList<ConversationMessage>> ReadChunksAsync(
        string tenantId, Guid conversationId, long afterSequence, long upToSequence, int chunkSize,
        CancellationToken cancellationToken = default)
        => ChunksAsync(tenantId, afterSequence, upToSequence, chunkSize, (session, from, token) => session.Query<StoredMessage>()
            .Where(m => m.ConversationId == conversationId && m.Sequence > from && m.Sequence <= upToSequence)
            .OrderBy(m => m.Sequence)
            .Take(chunkSize)
            .ToListAsync(token), ToContract, cancellationToken);

    public IAsyncEnumerable<IReadOnlyList<ConversationMessage>> ReadArchivedChunksAsync(
        string tenantId, Guid conversationId, long afterSequence, long upToSequence, int chunkSize,
        CancellationToken cancellationToken = default)
        => ChunksAsync(tenantId, afterSequence, upToSequence, chunkSize, (session, from, token) => session.Query<ArchivedMessage>()
            .Where(m => m.ConversationId == conversationId && m.Sequence > from && m.Sequence <= upToSequence)
            .OrderBy(m => m.Sequence)
            .Take(chunkSize)
            .ToListAsync(token), m => ToContract(m.ToStored()), cancellationToken);

    public async Task<ConversationMessage?> FindByExternalIdAsync(
        string tenantId, Guid conversationId, string externalId, CancellationToken cancellationToken = default)
    {
        await using var session = store.QuerySession(tenantId);
        var hot = await session.Query<StoredMessage>()
            .Where(m => m.ConversationId == conversationId && m.ExternalId == externalId)
            .FirstOrDefaultAsync(cancellationToken);
        if (hot is not null)
        {
            return ToContract(hot);
        }

        var archived = await session.Query<ArchivedMessage>()
            .Where(m => m.ConversationId == conversationId && m.ExternalId == externalId)
            .FirstOrDefaultAsync(cancellationToken);
        return archived is null ? null : ToContract(archived.ToStored());
    }

    public async Task<long?> FindDeletedSequenceAsync(
        string tenantId, Guid conversationId, string externalId, CancellationToken cancellationToken = default)
    {
        // Retention keeps the key of every message it takes out of the hot table; those it archived are still readable.
        await using var session = store.QuerySession(tenantId);
        var retired = await session.Query<RetiredExternalId>()
            .Where(k => k.ConversationId == conversationId && k.ExternalId == externalId)
            .FirstOrDefaultAsync(cancellationToken);
        if (retired is null)
        {
            return null;
        }

        var archived = await session.Query<ArchivedMessage>()
            .AnyAsync(m => m.ConversationId == conversationId && m.ExternalId == externalId, cancellationToken);
        return archived ? null : retired.Sequence;
    }

    public async Task<IReadOnlyList<ConversationMessage>> ReadLatestAsync(
        string tenantId, Guid conversationId, int count, long? beforeSequence = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 0);
        if (count == 0)
        {
            return [];
        }

        await using var session = store.QuerySession(tenantId);
        var query = session.Query<StoredMessage>().Where(m => m.ConversationId == conversationId);
        if (beforeSequence is { } before)
        {
            query = query.Where(m => m.Sequence < before);
        }

        var latest = await query.OrderByDescending(m => m.Sequence).Take(count).ToListAsync(cancellationToken);
        return latest.Reverse().Select(ToContract).ToList();
    }

    public async Task<IReadOnlyList<AppendedConversationMessage>> AppendAsync(
        string tenantId, Guid conversationId, IReadOnlyList<NewConversationMessage> messages, bool firstStoredWins = false,
        CancellationToken cancellationToken = default)
    {
        // Through the same command as the REST API, so validation, limits, idempotency and events are identical.
        await using var scope = scopes.CreateAsyncScope();
        scope.ServiceProvider.GetRequiredService<TenantContext>().Use(tenantId);
        var command = new AppendMessages(
            conversationId,
            messages.Select(m => new NewMessage(MessageRoles.ToWire(m.Role), m.Content, m.ExternalId,
                m.Metadata is null ? null : new Dictionary<string, string>(m.Metadata), m.CreatedAt)).ToList(),
            ExpectedVersion: null,
            IsBatch: messages.Count != 1,
            FirstStoredWins: firstStoredWins);
        var result = await scope.ServiceProvider.GetRequiredService<ISender>().Send(command, cancellationToken);
        return result.Messages.Select(m => new AppendedConversationMessage(m.Id, m.Sequence, m.ExternalId, m.TokenCount, m.Duplicate)).ToList();
    }

    /// <summary>Pages of <paramref name="page"/>, one short-lived session each: nothing of an earlier chunk stays referenced.</summary>
    private async IAsyncEnumerable<IReadOnlyList<ConversationMessage>> ChunksAsync<T>(
        string tenantId, long afterSequence, long upToSequence, int chunkSize,
        Func<IQuerySession, long, CancellationToken, Task<IReadOnlyList<T>>> page, Func<T, ConversationMessage> toContract,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkSize, 1);
        var after = afterSequence;
        while (after < upToSequence)
        {
            IReadOnlyList<T> chunk;
            await using (var session = store.QuerySession(tenantId))
            {
                chunk = await page(session, after, cancellationToken);
            }

            if (chunk.Count == 0)
            {
                yield break;
            }

            var messages = chunk.Select(toContract).ToList();
            after = messages[^1].Sequence;
            yield return messages;
        }
    }

    private static ConversationMessage ToContract(StoredMessage m)
        => new(m.ConversationId, m.Id, m.Sequence, m.Role, m.Content, m.ExternalId, m.Metadata, m.CreatedAt, m.AppendedAt, m.TokenCount);
}
