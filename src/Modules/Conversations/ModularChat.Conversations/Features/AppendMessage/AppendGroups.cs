using System.Collections.Concurrent;
using JasperFx.Events;
using Marten;
using Marten.Services.BatchQuerying;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Background;
using ModularChat.BuildingBlocks.Caching;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Domain;
using ModularChat.Conversations.Features.GetContext;
using Wolverine;
using Wolverine.Marten.Publishing;
using Wolverine.Runtime;

namespace ModularChat.Conversations.Features.AppendMessage;

/// <summary>One append request, its CPU work done, waiting for its turn in a transaction.</summary>
/// <param name="Messages">The messages with their parsed role and token count, in request order.</param>
/// <param name="FirstStoredWins">
/// Whether an append that brings an external id the conversation holds is another run of a writer racing itself (two
/// runs of one chat turn) rather than a retry: nothing of it is stored, even with another role or content (no 409), and
/// each message is answered with the one stored under its id, or, where the first run stored none, as a duplicate with
/// no id and sequence 0.
/// </param>
internal sealed record PreparedAppend(
    Guid ConversationId, IReadOnlyList<(NewMessage Message, MessageRole Role, int Tokens)> Messages, long? ExpectedVersion,
    bool FirstStoredWins = false)
{
    public IEnumerable<string> ExternalIds => Messages.Select(m => m.Message.ExternalId).OfType<string>();
}

/// <summary>
/// Group commit for appends. Appends of one tenant that arrive while that tenant's previous transaction is being
/// written are queued and then written together, in one transaction: one round trip locks the streams (in a fixed
/// order) and reads their state and the external ids already stored, one writes every event, document and
/// Summaries notice, one commits. Each request still gets its own answer: a 404 or 409 fails that request alone,
/// and when the shared transaction itself fails, every request of the group is written again on its own, so a
/// request is stored all or nothing and one bad request cannot fail the others. A lone append is written at once,
/// as before; under load a transaction carries many appends and the round trips and commits per append fall.
/// </summary>
/// <remarks>
/// Inside a group, appends are decided in arrival order on the running state of each conversation. With
/// <see cref="ConversationsOptions.AppendGroupConcurrency"/> above one (the default is one writer per tenant and node),
/// several groups of a tenant are written at once and queue on a shared conversation's lock in either order: requests that are in flight together have no order among them, as without
/// grouping; a client that waits for each answer before the next append keeps its order. Requests of at least
/// <see cref="ConversationsOptions.AppendGroupMaxMessages"/> messages are written on their own, at once.
/// <para>
/// Under steady load the answered requests' clients come back while the next group is being written, so without
/// more they split into two cohorts that take turns, each group half of what is in flight. So after a group of
/// several appends the writer waits, up to <see cref="ConversationsOptions.AppendGroupWait"/>, until as many appends are
/// queued as were in flight in the cycle just written (PostgreSQL's <c>commit_delay</c> with <c>commit_siblings</c> is the
/// same idea). A lone client never waits: its group held one append. ADR 0005 has the measurements.
/// </para>
/// </remarks>
internal sealed class AppendGroups(
    OutboxedSessionFactory outboxedSessions,
    IDocumentStore store,
    IWolverineRuntime runtime,
    TimeProvider clock,
    ConversationsMetrics metrics,
    AppendBursts bursts,
    CacheGenerations generations,
    IOptions<ConversationsOptions> options,
    ILogger<AppendGroups> logger)
{
    private readonly ConcurrentDictionary<string, Lane> _lanes = new(StringComparer.Ordinal);
    private readonly string _lookupSql = MessagesByExternalId.CallSql(store.Options.DatabaseSchemaName);

    /// <summary>Writes <paramref name="append"/> for <paramref name="tenantId"/>, alone or with others of the same tenant.</summary>
    /// <param name="cancellationToken">Drops the append if it is cancelled before its transaction starts; once started, it completes.</param>
    public Task<AppendResult> AppendAsync(string tenantId, PreparedAppend append, CancellationToken cancellationToken)
    {
        ConversationStreams.EnsureCanExist(append.ConversationId); // never into a group: it would fail the group's fetch
        var pending = new PendingAppend(append, cancellationToken);
        var settings = options.Value;
        if (append.Messages.Count >= settings.AppendGroupMaxMessages || settings.AppendGroupConcurrency == 0)
        {
            return WriteAloneAsync(tenantId, pending);
        }

        while (true)
        {
            var lane = _lanes.GetOrAdd(tenantId, static _ => new Lane());
            lock (lane)
            {
                if (lane.Retired)
                {
                    continue; // emptied and removed meanwhile: take the new one
                }

                lane.Enqueue(pending);
                metrics.AppendQueue(1);
                if (lane.Writers >= settings.AppendGroupConcurrency)
                {
                    return pending.Completion.Task; // a writer of this lane will take it with the next group
                }

                lane.Writers++;
            }

            _ = Task.Run(() => DrainAsync(tenantId, lane));
            return pending.Completion.Task;
        }
    }

    /// <summary>How many appends of <paramref name="tenantId"/> wait for a transaction on this node.</summary>
    internal int QueuedFor(string tenantId)
    {
        if (!_lanes.TryGetValue(tenantId, out var lane))
        {
            return 0;
        }

        lock (lane)
        {
            return lane.Count;
        }
    }

    private async Task<AppendResult> WriteAloneAsync(string tenantId, PendingAppend pending)
    {
        pending.CancellationToken.ThrowIfCancellationRequested();
        await WriteGroupAsync(tenantId, [pending]);
        return await pending.Completion.Task;
    }

    /// <summary>Writes the lane's queue, group after group, until it is empty.</summary>
    private async Task DrainAsync(string tenantId, Lane lane)
    {
        var maxMessages = options.Value.AppendGroupMaxMessages;
        var inFlight = 0; // appends in flight during the last group's write: its own and those queued meanwhile
        while (true)
        {
            if (inFlight > 1)
            {
                await lane.GatherAsync(inFlight, maxMessages, options.Value.AppendGroupWait, clock);
            }

            var group = new List<PendingAppend>();
            lock (lane)
            {
                var messages = 0;
                while (lane.TryPeek(out var next) && (group.Count == 0 || messages + next.Append.Messages.Count <= maxMessages))
                {
                    lane.Dequeue();
                    metrics.AppendQueue(-1);
                    if (next.CancellationToken.IsCancellationRequested)
                    {
                        next.Completion.TrySetCanceled(next.CancellationToken);
                        continue;
                    }

                    group.Add(next);
                    messages += next.Append.Messages.Count;
                }

                if (group.Count == 0)
                {
                    if (--lane.Writers == 0)
                    {
                        lane.Retired = true;
                        _lanes.TryRemove(new KeyValuePair<string, Lane>(tenantId, lane));
                    }

                    return;
                }
            }

            await WriteGroupAsync(tenantId, group);
            lock (lane)
            {
                inFlight = group.Count + lane.Count;
            }
        }
    }

    /// <summary>Writes a group in one transaction, or, when that transaction fails, each of its appends in its own.</summary>
    private async Task WriteGroupAsync(string tenantId, List<PendingAppend> group)
    {
        try
        {
            await WriteAsync(tenantId, group);
        }
        catch (Exception e) when (group.Count > 1)
        {
            logger.LogWarning(e, "A transaction of {Count} appends failed; writing each on its own", group.Count);
            foreach (var pending in group)
            {
                await WriteGroupAsync(tenantId, [pending]);
            }
        }
        catch (Exception e)
        {
            group[0].Completion.TrySetException(e);
        }
    }

    private async Task WriteAsync(string tenantId, List<PendingAppend> group)
    {
        var context = new MessageContext(runtime) { TenantId = tenantId };
        await using var session = outboxedSessions.OpenSession(context, tenantId);

        // Each conversation's stream, locked in a fixed order (by id) so two groups that share conversations cannot
        // deadlock, and the messages it already holds with the external ids the group brings for it.
        var batch = session.CreateBatchQuery();
        var fetches = group.GroupBy(p => p.Append.ConversationId).OrderBy(g => g.Key).Select(g =>
        {
            var id = g.Key;
            var externalIds = g.SelectMany(p => p.Append.ExternalIds).Distinct(StringComparer.Ordinal).ToArray();
            return (Id: id, Stream: batch.Events.FetchForExclusiveWriting<Conversation>(id), Found: FindExisting(batch, tenantId, id, externalIds));
        }).ToList();
        await batch.Execute(CancellationToken.None);

        var streams = new Dictionary<Guid, StreamState>();
        foreach (var (id, stream, found) in fetches)
        {
            streams[id] = new StreamState(await stream, await found);
        }

        var now = clock.GetUtcNow().TruncateToMicroseconds();
        var outcomes = new List<(PendingAppend Pending, AppendResult Result)>(group.Count);
        var failures = new List<(PendingAppend Pending, Exception Error)>();
        foreach (var pending in group)
        {
            var append = pending.Append;
            var state = streams[append.ConversationId];
            try
            {
                // A retry of a stored append (every message's external id known) answers the original, whatever version it
                // expected: the version moved because of that append itself.
                var expected = state.HoldsAll(append) ? null : append.ExpectedVersion;
                ConversationStreams.EnsureWritable(state.Stream.Aggregate, state.Version, append.ConversationId, expected);
                if (!append.FirstStoredWins)
                {
                    state.EnsureRetriesMatch(append);
                }
            }
            catch (Exception e) when (e is NotFoundException or ConflictException)
            {
                failures.Add((pending, e));
                continue;
            }

            outcomes.Add((pending, state.Decide(append, now)));
        }

        var written = streams.Values.Where(s => s.Appended.Count > 0).ToList();
        if (written.Count > 0)
        {
            foreach (var state in written)
            {
                state.Stream.AppendMany(state.Appended);
            }

            // One compact notice per transaction for the modules that follow growth (Summaries).
            await context.PublishAsync(
                new AppendsCommitted([.. written.Select(s => new AppendCommitted(
                    s.Stream.Id, s.Appended[0].Sequence, s.Appended[^1].Sequence, s.Appended.Count, s.Appended.Sum(m => (long)m.TokenCount), now))]),
                new DeliveryOptions { TenantId = tenantId });

            // An event of the group, to tell a save that failed after its commit (the outbox's delivery, a listener) from one
            // that stored nothing: written again, the group's appends without an external id would be stored twice.
            var (markerStream, marker) = session.PendingChanges.Streams().SelectMany(s => s.Events.Select(e => (s.Id, e.Id))).FirstOrDefault();
            try
            {
                await session.SaveChangesAsync(CancellationToken.None);
            }
            catch (Exception e) when (marker != Guid.Empty)
            {
                if (!await StoredAsync(session.DocumentStore, tenantId, markerStream, marker))
                {
                    throw;
                }

                logger.LogWarning(e, "A transaction of {Count} appends was committed, but its save failed after the commit: the appends are answered as stored", group.Count);
            }

            // Stored: nothing after this line may throw, or the group would be written a second time.
            try
            {
                metrics.AppendGroup(group.Count);
                bursts.Record(written.Sum(s => s.Appended.Count));
                foreach (var state in written)
                {
                    metrics.Appended(state.Appended);
                }
            }
            catch (Exception e)
            {
                logger.LogError(e, "Appends were stored but could not be counted");
            }
        }

        foreach (var (pending, error) in failures)
        {
            pending.Completion.TrySetException(error);
        }

        // The writer goes on with the next group while the caches are invalidated: the round trip to Redis is not the
        // next transaction's business.
        _ = AnswerAsync(tenantId, written, outcomes);
    }

    /// <summary>
    /// Whether the event <paramref name="eventId"/> of <paramref name="streamId"/> was stored (false also when that cannot be
    /// told: the group is then written again, as before). Looked for among its stream's events (the event table's index on
    /// tenant, stream and version): no index has the event's id, and by the id alone it read every event of the tenant.
    /// </summary>
    private async Task<bool> StoredAsync(IDocumentStore store, string tenantId, Guid streamId, Guid eventId)
    {
        try
        {
            await using var query = store.QuerySession(tenantId);
            return await query.Events.QueryAllRawEvents().AnyAsync(e => e.StreamId == streamId && e.Id == eventId);
        }
        catch (Exception e)
        {
            logger.LogWarning(e, "Could not tell whether a failed transaction of appends was committed");
            return false;
        }
    }

    /// <summary>Invalidates the cached contexts of the conversations written, then answers the appends stored.</summary>
    private async Task AnswerAsync(string tenantId, List<StreamState> written, List<(PendingAppend Pending, AppendResult Result)> outcomes)
    {
        try
        {
            // Before answering: from here on no node serves a context without these messages.
            await Task.WhenAll(written.Select(s => generations.BumpAsync(ConversationContexts.Scope(tenantId, s.Stream.Id))));
        }
        catch (Exception e)
        {
            logger.LogError(e, "Appends were stored but their caches could not be invalidated");
        }
        finally
        {
            foreach (var (pending, result) in outcomes)
            {
                pending.Completion.TrySetResult(result);
            }
        }
    }

    /// <summary>
    /// The messages of a conversation that already hold one of <paramref name="externalIds"/>: one statement, one probe of
    /// the unique index per id however large the conversation (see <see cref="MessagesByExternalId"/>).
    /// </summary>
    private Task<IReadOnlyList<StoredMessage>> FindExisting(IBatchedQuery batch, string tenantId, Guid conversationId, string[] externalIds)
        => externalIds.Length == 0
            ? Task.FromResult<IReadOnlyList<StoredMessage>>([])
            : batch.Query<StoredMessage>(_lookupSql, tenantId, conversationId, externalIds);

    /// <summary>The appends of one tenant waiting for a transaction, and how many writers drain them.</summary>
    /// <remarks>Guarded by a lock on the lane itself.</remarks>
    private sealed class Lane
    {
        private TaskCompletionSource? _gathering;
        private int _gatherAppends;
        private int _gatherMessages;
        private int _queuedMessages;

        private readonly Queue<PendingAppend> _queue = new();

        /// <summary>Appends queued; the caller holds the lane's lock.</summary>
        public int Count => _queue.Count;

        /// <summary>The next append, left on the queue; the caller holds the lane's lock.</summary>
        public bool TryPeek([System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out PendingAppend next) => _queue.TryPeek(out next);

        /// <summary>Queues an append; the caller holds the lane's lock.</summary>
        public void Enqueue(PendingAppend pending)
        {
            _queue.Enqueue(pending);
            _queuedMessages += pending.Append.Messages.Count;
            if (_gathering is not null && Gathered(_gatherAppends, _gatherMessages))
            {
                _gathering.TrySetResult();
            }
        }

        /// <summary>Takes the next append off the queue; the caller holds the lane's lock.</summary>
        public void Dequeue() => _queuedMessages -= _queue.Dequeue().Append.Messages.Count;

        /// <summary>
        /// Waits until <paramref name="appends"/> appends, or a full group of <paramref name="messages"/> messages, are
        /// queued, or <paramref name="wait"/> has passed. One writer gathers at a time (another writer of the lane goes on at once).
        /// </summary>
        public async Task GatherAsync(int appends, int messages, TimeSpan wait, TimeProvider clock)
        {
            if (wait <= TimeSpan.Zero)
            {
                return;
            }

            TaskCompletionSource gathering;
            lock (this)
            {
                if (Gathered(appends, messages) || _gathering is not null)
                {
                    return;
                }

                _gathering = gathering = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                (_gatherAppends, _gatherMessages) = (appends, messages);
            }

            // WaitAsync drops its timer as soon as the queue is gathered (a Task.Delay would keep it until it fired); a timeout is no error.
            await gathering.Task.WaitAsync(wait, clock).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            lock (this)
            {
                _gathering = null;
            }
        }

        private bool Gathered(int appends, int messages) => _queue.Count >= appends || _queuedMessages >= messages;

        public int Writers { get; set; }

        /// <summary>Emptied and removed from the lanes: a new append takes a new lane.</summary>
        public bool Retired { get; set; }
    }

    private sealed class PendingAppend(PreparedAppend append, CancellationToken cancellationToken)
    {
        public PreparedAppend Append { get; } = append;

        public CancellationToken CancellationToken { get; } = cancellationToken;

        public TaskCompletionSource<AppendResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>A locked conversation stream and what the group has decided to append to it so far.</summary>
    private sealed class StreamState(IEventStream<Conversation> stream, IEnumerable<StoredMessage> found)
    {
        // A key retention took out of the hot messages (RetiredExternalId) reads as a stored message without content.
        private readonly Dictionary<string, KnownMessage> _existing = found.ToDictionary(
            m => m.ExternalId!,
            m => new KnownMessage(
                new AppendedMessage(m.Id, m.Sequence, m.ExternalId, m.TokenCount, m.CreatedAt, Duplicate: true), m.Role, m.Content.Length == 0 ? null : m.Content),
            StringComparer.Ordinal);

        public IEventStream<Conversation> Stream { get; } = stream;

        public List<MessageAppended> Appended { get; } = [];

        /// <summary>The conversation's version (as clients see it) once what the group decided so far is written.</summary>
        public long Version => (Stream.Aggregate?.ClientVersion ?? 0) + Appended.Count;

        /// <summary>Whether every message of <paramref name="append"/> has an external id the conversation already holds (nothing to store).</summary>
        public bool HoldsAll(PreparedAppend append)
            => append.Messages.All(m => m.Message.ExternalId is { } externalId && _existing.ContainsKey(externalId));

        /// <summary>
        /// Refuses (409) an append that brings an external id the conversation holds, or that an earlier message of the same
        /// request holds, with another role or content: that is another message, not a retry, and answering the stored one
        /// would tell the client that a message was stored when it was dropped. Metadata and createdAt may differ (a retry
        /// may stamp them anew). A key whose message retention took away has no content to compare: its retry is answered.
        /// </summary>
        public void EnsureRetriesMatch(PreparedAppend append)
        {
            Dictionary<string, (MessageRole Role, string Content)>? earlier = null;
            foreach (var (message, role, _) in append.Messages)
            {
                if (message.ExternalId is not { } externalId)
                {
                    continue;
                }

                if (_existing.TryGetValue(externalId, out var known))
                {
                    if (known.Content is { } content && Difference((known.Role, content), role, message.Content!) is { } what)
                    {
                        throw new ConflictException(
                            $"externalId '{externalId}' already names message {known.Answer.Sequence} of this conversation, with another " +
                            $"{what}: a retry sends the same role and content; another message needs another externalId.",
                            new Dictionary<string, object?> { ["externalId"] = externalId, ["sequence"] = known.Answer.Sequence });
                    }
                }
                else if (!(earlier ??= new(StringComparer.Ordinal)).TryAdd(externalId, (role, message.Content!))
                         && Difference(earlier[externalId], role, message.Content!) is not null)
                {
                    throw new ConflictException(
                        $"externalId '{externalId}' names two different messages of this request: another message needs another externalId.",
                        new Dictionary<string, object?> { ["externalId"] = externalId });
                }
            }
        }

        /// <summary>What a message of <paramref name="role"/> and <paramref name="content"/> differs from <paramref name="first"/> in ("role", "content"), or null.</summary>
        private static string? Difference((MessageRole Role, string Content) first, MessageRole role, string content)
            => first.Role != role ? "role" : string.Equals(first.Content, content, StringComparison.Ordinal) ? null : "content";

        /// <summary>The messages of <paramref name="append"/> to store and the answer for each: a known external id is returned, not stored.</summary>
        public AppendResult Decide(PreparedAppend append, DateTimeOffset now)
        {
            if (append.FirstStoredWins && append.Messages.Any(m => m.Message.ExternalId is { } id && _existing.ContainsKey(id)))
            {
                // Another run of the same writer was stored first, and its messages are the outcome: nothing of this run is
                // stored, not even the messages the first run did not have (another run's tool calls would otherwise follow
                // the first run's answer, and be replayed in later turns).
                return new AppendResult(append.ConversationId, Version, [.. append.Messages.Select(m =>
                    m.Message.ExternalId is { } id && _existing.TryGetValue(id, out var first)
                        ? first.Answer
                        : new AppendedMessage(Guid.Empty, 0, m.Message.ExternalId, m.Tokens, now, Duplicate: true))]);
            }

            var results = new List<AppendedMessage>(append.Messages.Count);
            foreach (var (message, role, tokenCount) in append.Messages)
            {
                if (message.ExternalId is { } externalId && _existing.TryGetValue(externalId, out var original))
                {
                    results.Add(original.Answer);
                    continue;
                }

                var e = new MessageAppended(
                    append.ConversationId, Guid.CreateVersion7(), Stream.Aggregate!.MessageCount + Appended.Count + 1, role, message.Content!,
                    message.ExternalId, message.Metadata, message.CreatedAt?.TruncateToMicroseconds() ?? now, now, tokenCount);
                Appended.Add(e);
                var stored = new AppendedMessage(e.MessageId, e.Sequence, e.ExternalId, e.TokenCount, e.CreatedAt, Duplicate: false);
                results.Add(stored);
                if (e.ExternalId is not null)
                {
                    // A repeat later in the group (or the same request) is a duplicate too.
                    _existing[e.ExternalId] = new KnownMessage(stored with { Duplicate = true }, role, e.Content);
                }
            }

            return new AppendResult(append.ConversationId, Version, results);
        }
    }

    /// <summary>A message the conversation holds under an external id: the answer to its retry, and what a retry must match (no content once retention took it).</summary>
    private sealed record KnownMessage(AppendedMessage Answer, MessageRole Role, string? Content);
}
