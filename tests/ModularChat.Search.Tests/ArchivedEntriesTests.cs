using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using JasperFx.Events;
using Microsoft.Extensions.DependencyInjection;
using ModularChat.Conversations.Contracts;
using Npgsql;

namespace ModularChat.Search.Tests;

/// <summary>
/// Messages that retention archives leave the event stream: the projection indexes them from the archive when it
/// meets the <see cref="RetentionApplied"/> that archived them, but only those without an entry. Live, every one was
/// indexed when it was appended, so nothing is read back; a rebuild reads exactly the missing ones.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class ArchivedEntriesTests(SearchApp app)
{
    [Fact]
    public async Task Archiving_reads_back_only_messages_without_an_entry_so_live_retention_reads_and_writes_nothing()
    {
        var conversationId = Guid.NewGuid();
        var archive = new RecordingArchive(conversationId, 6);
        var projection = app.Projection(() => archive);

        // Live: messages 1-6 were indexed as they were appended; retention then archives 1-4.
        var live = ModularChatApp.NewUser();
        await app.ApplyPageAsync(live, projection, [.. Enumerable.Range(1, 6).Select(archive.Appended)]);
        var indexed = await EntriesAsync(live, conversationId);
        archive.ArchivedThrough = 4;
        await app.ApplyPageAsync(live, projection, [Archived(conversationId, 1, 4)]);
        Assert.Empty(archive.Reads);
        Assert.Equal(indexed, await EntriesAsync(live, conversationId)); // the very same row versions (xmin)

        // A rebuild no longer replays 1-4 (compacted away): they are read from the archive and indexed again.
        var rebuilt = ModularChatApp.NewUser();
        await app.ApplyPageAsync(rebuilt, projection, [archive.Appended(5), archive.Appended(6), Archived(conversationId, 1, 4)]);
        Assert.Equal([(rebuilt, 0L, 4L)], archive.Reads);
        Assert.Equal(indexed.Select(e => (e.Sequence, e.Id)), (await EntriesAsync(rebuilt, conversationId)).Select(e => (e.Sequence, e.Id)));

        // Only the runs without an entry are read.
        archive.Reads.Clear();
        var partial = ModularChatApp.NewUser();
        await app.ApplyPageAsync(partial, projection, [archive.Appended(1), archive.Appended(4)]);
        archive.ArchivedThrough = 5;
        await app.ApplyPageAsync(partial, projection, [archive.Appended(6), Archived(conversationId, 1, 5)]);
        Assert.Equal([(partial, 1L, 3L), (partial, 4L, 5L)], archive.Reads);
        Assert.Equal(indexed.Select(e => e.Sequence), (await EntriesAsync(partial, conversationId)).Select(e => e.Sequence));

        // A later step (5) compacted the stream past the first step's event (1-4), which a rebuild then never meets: the
        // later step's event brings back every range archived before it.
        archive.Reads.Clear();
        var folded = ModularChatApp.NewUser();
        await app.ApplyPageAsync(folded, projection, [archive.Appended(6), Archived(conversationId, 5, 5)]);
        Assert.Equal([(folded, 0L, 5L)], archive.Reads);
        Assert.Equal(indexed.Select(e => e.Sequence), (await EntriesAsync(folded, conversationId)).Select(e => e.Sequence));
    }

    private static IEvent Archived(Guid conversationId, long from, long to)
        => new Event<RetentionApplied>(new RetentionApplied(conversationId, RetentionAction.Archived, from, to, to - from + 1, 100, "archive-after-summary", to,
            DateTimeOffset.UtcNow));

    /// <summary>The message entries of a conversation with the transaction that last wrote each row.</summary>
    private async Task<List<(long Sequence, Guid Id, string Xmin)>> EntriesAsync(string tenant, Guid conversationId)
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(
            "select sequence, id, xmin::text from modularchat.mc_search_entries where tenant_id = $1 and conversation_id = $2 and kind = 0 order by sequence",
            connection);
        command.Parameters.Add(new NpgsqlParameter { Value = tenant });
        command.Parameters.Add(new NpgsqlParameter { Value = conversationId });
        var entries = new List<(long, Guid, string)>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            entries.Add((reader.GetInt64(0), reader.GetGuid(1), reader.GetString(2)));
        }

        return entries;
    }

    /// <summary>The Conversations module's archive of one conversation, as the projection reads it, recording each read.</summary>
    private sealed class RecordingArchive(Guid conversationId, int count) : IConversationMessages
    {
        private readonly Guid[] _ids = [.. Enumerable.Range(0, count + 1).Select(_ => Guid.NewGuid())];
        private readonly DateTimeOffset _at = DateTimeOffset.UtcNow;

        public ConcurrentQueue<(string Tenant, long After, long UpTo)> Reads { get; } = new();

        /// <summary>The conversation's archived range now (1 to this), as the projection reads it.</summary>
        public long ArchivedThrough { get; set; }

        public IEvent Appended(int sequence)
        {
            var m = Message(sequence);
            return new Event<MessageAppended>(new MessageAppended(m.ConversationId, m.MessageId, m.Sequence, m.Role, m.Content, m.ExternalId, m.Metadata,
                m.CreatedAt, m.AppendedAt, m.TokenCount));
        }

        public async IAsyncEnumerable<IReadOnlyList<ConversationMessage>> ReadArchivedChunksAsync(string tenantId, Guid conversationId, long afterSequence,
            long upToSequence, int chunkSize, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            Reads.Enqueue((tenantId, afterSequence, upToSequence));
            await Task.Yield();
            yield return [.. Enumerable.Range((int)afterSequence + 1, (int)(upToSequence - afterSequence)).Select(Message)];
        }

        private ConversationMessage Message(int sequence)
            => new(conversationId, _ids[sequence], sequence, MessageRole.User, $"Archived message {sequence} about the lighthouse.", null, null, _at, _at, 8);

        public Task<IReadOnlyList<Guid>> FindIdsByMetadataAsync(string tenantId, IReadOnlyCollection<KeyValuePair<string, string>> metadata, int limit,
            CancellationToken cancellationToken = default) => throw new NotSupportedException();

        public Task<ConversationInfo?> FindAsync(string tenantId, Guid conversationId, CancellationToken cancellationToken = default)
            => Task.FromResult<ConversationInfo?>(new ConversationInfo(conversationId, "archive", count, 8L * count, _at, _at, count)
            {
                Retained = [new RetainedMessages(RetentionAction.Archived, 1, ArchivedThrough)],
            });

        public IAsyncEnumerable<IReadOnlyList<ConversationMessage>> ReadChunksAsync(string tenantId, Guid conversationId, long afterSequence, long upToSequence,
            int chunkSize, CancellationToken cancellationToken = default)
            => throw new NotSupportedException();

        public Task<IReadOnlyList<ConversationTally>> ListTalliesAsync(string? tenantId, (string TenantId, Guid ConversationId)? after, int limit,
            CancellationToken cancellationToken = default)
            => throw new NotSupportedException();

        public Task<IReadOnlyList<ConversationMessage>> ReadLatestAsync(string tenantId, Guid conversationId, int count, long? beforeSequence = null,
            CancellationToken cancellationToken = default)
            => throw new NotSupportedException();

        public Task<ConversationMessage?> FindByExternalIdAsync(string tenantId, Guid conversationId, string externalId, CancellationToken cancellationToken = default)
            => throw new NotSupportedException();

        public Task<long?> FindDeletedSequenceAsync(string tenantId, Guid conversationId, string externalId, CancellationToken cancellationToken = default)
            => throw new NotSupportedException();

        public Task<IReadOnlyList<AppendedConversationMessage>> AppendAsync(string tenantId, Guid conversationId, IReadOnlyList<NewConversationMessage> messages,
            bool firstStoredWins = false, CancellationToken cancellationToken = default)
            => throw new NotSupportedException();
    }
}
