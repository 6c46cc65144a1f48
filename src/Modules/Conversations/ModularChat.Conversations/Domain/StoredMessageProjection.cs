using JasperFx.Events;
using JasperFx.Events.Projections;
using Marten;
using Marten.Events.Projections;
using ModularChat.Conversations.Contracts;

namespace ModularChat.Conversations.Domain;

/// <summary>
/// Keeps one <see cref="StoredMessage"/> per appended message, inline with the append: the messages of one
/// transaction (a group commit, a 1,000-message batch) become one set-based statement (unnest of arrays) instead of
/// one statement per message, which is most of what storing a message costs in PostgreSQL after its event.
/// </summary>
/// <remarks>
/// The rows are the ones Marten writes for the document (same columns, its serializer, an upsert on the primary key
/// so a rebuild can replay), so every query, index and <c>projections rebuild</c> works on them as on any document.
/// </remarks>
public sealed class StoredMessageProjection : ProjectionBase, IProjection
{
    public const string ProjectionName = "StoredMessages";

    private static readonly string DotnetType = typeof(StoredMessage).FullName!;
    private readonly string _insertSql;

    public StoredMessageProjection(string schema)
    {
        Name = ProjectionName;
        IncludeType<MessageAppended>();
        IncludeType<ConversationDeleted>();
        var table = $"{schema}.mt_doc_storedmessage";
        Options.DeleteDataInTableOnTeardown(table);
        _insertSql = $"""
            insert into {table} as d (tenant_id, id, data, mt_version, mt_dotnet_type, mt_last_modified, conversation_id, sequence, external_id)
            select ^, x.id, x.data, x.version, ^, transaction_timestamp(), x.conversation_id, x.sequence, x.external_id
            from unnest(^::uuid[], ^::jsonb[], ^::uuid[], ^::uuid[], ^::bigint[], ^::varchar[])
                as x(id, data, version, conversation_id, sequence, external_id)
            on conflict (tenant_id, id) do update set
                data = excluded.data, mt_version = excluded.mt_version, mt_dotnet_type = excluded.mt_dotnet_type,
                mt_last_modified = excluded.mt_last_modified, conversation_id = excluded.conversation_id,
                sequence = excluded.sequence, external_id = excluded.external_id
            """;
    }

    public Task ApplyAsync(IDocumentOperations operations, IReadOnlyList<IEvent> events, CancellationToken cancellation)
    {
        var serializer = operations.DocumentStore.Options.Serializer();
        var messages = new List<StoredMessage>();
        foreach (var e in events)
        {
            switch (e.Data)
            {
                case MessageAppended m:
                    messages.Add(StoredMessage.From(m));
                    break;
                case ConversationDeleted d:
                    Flush(operations, serializer, messages);
                    operations.HardDeleteWhere<StoredMessage>(m => m.ConversationId == d.ConversationId);
                    operations.HardDeleteWhere<ArchivedMessage>(m => m.ConversationId == d.ConversationId);
                    operations.HardDeleteWhere<RetiredExternalId>(m => m.ConversationId == d.ConversationId);
                    break;
            }
        }

        Flush(operations, serializer, messages);
        return Task.CompletedTask;
    }

    private void Flush(IDocumentOperations operations, ISerializer serializer, List<StoredMessage> messages)
    {
        if (messages.Count == 0)
        {
            return;
        }

        operations.QueueSqlCommand('^', _insertSql,
            operations.TenantId, DotnetType,
            messages.Select(m => m.Id).ToArray(),
            messages.Select(m => serializer.ToJson(m)).ToArray(),
            messages.Select(_ => Guid.CreateVersion7()).ToArray(),
            messages.Select(m => m.ConversationId).ToArray(),
            messages.Select(m => m.Sequence).ToArray(),
            messages.Select(m => m.ExternalId).ToArray());
        messages.Clear();
    }
}
