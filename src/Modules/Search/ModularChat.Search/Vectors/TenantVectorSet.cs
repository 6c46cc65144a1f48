using System.Buffers;
using System.Numerics.Tensors;
using ModularChat.Search.Storage;

namespace ModularChat.Search.Vectors;

/// <summary>
/// A vector as stored in PostgreSQL (<paramref name="Stored"/>, in one of <see cref="VectorBytes"/>' formats, of
/// <paramref name="Dimensions"/> dimensions), with the attributes search filters on.
/// </summary>
internal sealed record VectorRow(
    Guid EntryId,
    Guid ConversationId,
    EntryKind Kind,
    long Sequence,
    int? Revision,
    string? Role,
    DateTimeOffset CreatedAt,
    string Model,
    byte[] Stored,
    int Dimensions,
    int[] Terms);

/// <summary>Messages of a conversation, from one sequence to another (both included), that retention deleted.</summary>
internal sealed record RemovedMessages(Guid ConversationId, long FromSequence, long ToSequence);

/// <summary>
/// One tenant's vectors of one model in memory: column arrays (ids, attributes, int8 or float32 vectors in one
/// contiguous block) scanned exactly with SIMD, links to each message's neighbouring turns, and the document
/// frequencies of words for query weighting. Readers share a lock; PostgreSQL changes are applied under the write lock.
/// </summary>
internal sealed class TenantVectorSet
{
    private const int NoSlot = -1;

    private readonly ReaderWriterLockSlim _lock = new();
    private readonly Dictionary<Guid, int> _slotById = [];
    private readonly Dictionary<(int Conversation, long Sequence), int> _messageSlot = [];
    private readonly Dictionary<Guid, int> _conversationOrdinal = [];
    private readonly List<Guid> _conversationIds = [];
    private readonly Dictionary<int, List<int>> _conversationSlots = [];
    private readonly Dictionary<int, int> _documentFrequency = [];

    private int _dimensions;
    private int _count;
    private int _live;
    private Guid[] _ids = [];
    private int[] _conversation = [];
    private byte[] _kind = [];
    private long[] _sequence = [];
    private int[] _revision = [];
    private byte[] _role = [];
    private long[] _createdTicks = [];
    private bool[] _alive = [];
    private int[] _previous = [];
    private int[] _next = [];
    private int[][] _terms = [];
    private sbyte[] _quantized = [];
    private float[] _floats = [];
    private float[] _scales = [];

    public TenantVectorSet(string tenantId, string model, VectorPrecision precision)
    {
        TenantId = tenantId;
        Model = model;
        Precision = precision;
    }

    public string TenantId { get; }

    public string Model { get; }

    public VectorPrecision Precision { get; }

    /// <summary>Serializes loading and refreshing from PostgreSQL.</summary>
    public SemaphoreSlim RefreshGate { get; } = new(1, 1);

    public bool Loaded { get; set; }

    /// <summary>Rows written by transactions from this id on may not have been seen yet.</summary>
    public ulong Horizon { get; set; }

    /// <summary>The index generation (see the state table) this copy was loaded under.</summary>
    public long Generation { get; set; }

    public long LastRefreshTicks { get; set; }

    public long LastUsedTicks { get; set; }

    public int Count
    {
        get
        {
            _lock.EnterReadLock();
            try
            {
                return _live;
            }
            finally
            {
                _lock.ExitReadLock();
            }
        }
    }

    /// <summary>Approximate bytes held (vectors, attributes, maps).</summary>
    public long Bytes
    {
        get
        {
            var perSlot = Precision == VectorPrecision.Int8 ? _dimensions + 4 : _dimensions * 4;
            return (long)_ids.Length * (perSlot + 16 + 4 + 1 + 8 + 4 + 1 + 8 + 1 + 4 + 4 + 8 + 24) + (long)_live * (16 * 3 + 40) + (long)_documentFrequency.Count * 12;
        }
    }

    /// <summary>Applies rows read from PostgreSQL: new and changed vectors, vectors of another model (dropped), deleted conversations.</summary>
    public void Apply(IReadOnlyList<VectorRow> rows, IReadOnlyList<Guid> deletedConversations, IReadOnlyList<RemovedMessages>? removedMessages = null, bool reset = false)
    {
        _lock.EnterWriteLock();
        try
        {
            if (reset)
            {
                Clear();
            }

            foreach (var conversationId in deletedConversations)
            {
                RemoveConversation(conversationId);
            }

            foreach (var range in removedMessages ?? [])
            {
                RemoveMessages(range);
            }

            foreach (var row in rows)
            {
                if (_slotById.TryGetValue(row.EntryId, out var existing))
                {
                    Remove(existing);
                }

                if (row.Model == Model && VectorBytes.FormatOf(row.Stored.Length, row.Dimensions) is not null
                    && (_dimensions == 0 || row.Dimensions == _dimensions))
                {
                    Add(row);
                }
            }

            if (_count - _live > Math.Max(1024, _count / 4))
            {
                Compact();
            }
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>The best <see cref="VectorQuery.Limit"/> entries passing the filter by cosine similarity plus a share of their neighbouring turns'.</summary>
    public List<VectorCandidate> Search(VectorQuery query)
    {
        _lock.EnterReadLock();
        try
        {
            if (_live == 0 || query.Vector.Length != _dimensions || query.Limit <= 0)
            {
                return [];
            }

            var filter = query.Filter;
            List<int>? scope = null;
            if (filter.ConversationId is { } conversationId)
            {
                if (!_conversationOrdinal.TryGetValue(conversationId, out var ordinal) || !_conversationSlots.TryGetValue(ordinal, out scope))
                {
                    return [];
                }
            }
            else if (filter.ConversationIds is { } conversationIds)
            {
                scope = [];
                foreach (var id in conversationIds)
                {
                    if (_conversationOrdinal.TryGetValue(id, out var ordinal) && _conversationSlots.TryGetValue(ordinal, out var slots))
                    {
                        scope.AddRange(slots);
                    }
                }

                if (scope.Count == 0)
                {
                    return [];
                }
            }

            var scores = ArrayPool<float>.Shared.Rent(_count);
            var quantizedQuery = Precision == VectorPrecision.Int8 ? ArrayPool<sbyte>.Shared.Rent(_dimensions) : null;
            try
            {
                var queryScale = quantizedQuery is null ? 0 : VectorMath.Quantize(query.Vector, quantizedQuery.AsSpan(0, _dimensions));
                if (quantizedQuery is not null && queryScale == 0)
                {
                    return []; // an empty query (no words) is similar to nothing
                }

                if (scope is null)
                {
                    for (var slot = 0; slot < _count; slot++)
                    {
                        scores[slot] = _alive[slot] ? Similarity(query.Vector, quantizedQuery, queryScale, slot) : 0;
                    }
                }
                else
                {
                    foreach (var slot in scope)
                    {
                        scores[slot] = Similarity(query.Vector, quantizedQuery, queryScale, slot);
                    }
                }

                return Select(query, filter, scope, scores);
            }
            finally
            {
                ArrayPool<float>.Shared.Return(scores);
                if (quantizedQuery is not null)
                {
                    ArrayPool<sbyte>.Shared.Return(quantizedQuery);
                }
            }
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    public float[] InverseDocumentFrequencies(IReadOnlyList<int> termIds)
    {
        _lock.EnterReadLock();
        try
        {
            var n = (double)_live;
            var result = new float[termIds.Count];
            for (var i = 0; i < result.Length; i++)
            {
                var df = _documentFrequency.GetValueOrDefault(termIds[i]);
                result[i] = (float)Math.Log(1 + (n - df + 0.5) / (df + 0.5));
            }

            return result;
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    public Dictionary<Guid, float[]> Vectors(IReadOnlyCollection<Guid> entryIds)
    {
        _lock.EnterReadLock();
        try
        {
            var result = new Dictionary<Guid, float[]>(entryIds.Count);
            foreach (var id in entryIds)
            {
                if (_slotById.TryGetValue(id, out var slot))
                {
                    result[id] = VectorOf(slot);
                }
            }

            return result;
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    /// <summary>Conversations ranked by cosine similarity of their centroids to <paramref name="conversationId"/>'s.</summary>
    public List<RelatedConversationScore> Related(Guid conversationId, int limit, float summaryWeight, IReadOnlySet<Guid>? among = null)
    {
        _lock.EnterReadLock();
        try
        {
            if (!_conversationOrdinal.TryGetValue(conversationId, out var target) || !_conversationSlots.ContainsKey(target))
            {
                return [];
            }

            var centroid = new float[_dimensions];
            var buffer = new float[_dimensions];
            var scratch = new float[_dimensions];
            Centroid(target, summaryWeight, centroid, scratch);
            var scores = new List<RelatedConversationScore>();
            foreach (var (ordinal, _) in _conversationSlots)
            {
                if (ordinal == target || (among is not null && !among.Contains(_conversationIds[ordinal])))
                {
                    continue;
                }

                buffer.AsSpan().Clear();
                if (Centroid(ordinal, summaryWeight, buffer, scratch))
                {
                    scores.Add(new RelatedConversationScore(_conversationIds[ordinal], TensorPrimitives.Dot(centroid, buffer)));
                }
            }

            return [.. scores.OrderByDescending(s => s.Score).Take(limit)];
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    private float Similarity(float[] query, sbyte[]? quantizedQuery, float queryScale, int slot)
    {
        var offset = slot * _dimensions;
        return quantizedQuery is null
            ? TensorPrimitives.Dot(query, _floats.AsSpan(offset, _dimensions))
            : VectorMath.Dot(quantizedQuery.AsSpan(0, _dimensions), _quantized.AsSpan(offset, _dimensions)) * queryScale * _scales[slot];
    }

    private List<VectorCandidate> Select(VectorQuery query, VectorFilter filter, List<int>? scope, float[] scores)
    {
        var kind = filter.Kind is { } k ? (byte)k : (byte)255;
        var role = filter.Role is null ? (byte)255 : RoleCode(filter.Role);
        var from = filter.From?.UtcTicks ?? long.MinValue;
        var to = filter.To?.UtcTicks ?? long.MaxValue;
        var heap = new PriorityQueue<int, float>(query.Limit + 1);
        var count = scope?.Count ?? _count;
        for (var i = 0; i < count; i++)
        {
            var slot = scope?[i] ?? i;
            if (!_alive[slot]
                || (kind != 255 && _kind[slot] != kind)
                || (role != 255 && _role[slot] != role)
                || _createdTicks[slot] < from || _createdTicks[slot] > to
                || (filter.ExcludeFromSequence is { } lo && filter.ExcludeToSequence is { } hi && _kind[slot] == (byte)EntryKind.Message
                    && _sequence[slot] >= lo && _sequence[slot] <= hi)
                || (filter.AllowedIds is { } allowed && !allowed.Contains(_ids[slot])))
            {
                continue;
            }

            var score = scores[slot];
            if (_previous[slot] != NoSlot)
            {
                score += query.PreviousTurnWeight * Math.Max(0, scores[_previous[slot]]);
            }

            if (_next[slot] != NoSlot)
            {
                score += query.NextTurnWeight * Math.Max(0, scores[_next[slot]]);
            }

            if (score <= 0)
            {
                continue; // unrelated (cosine at or below zero, context included)
            }

            if (heap.Count < query.Limit)
            {
                heap.Enqueue(slot, score);
            }
            else if (heap.TryPeek(out _, out var lowest) && score > lowest)
            {
                heap.DequeueEnqueue(slot, score);
            }
        }

        var result = new List<VectorCandidate>(heap.Count);
        while (heap.TryDequeue(out var slot, out var score))
        {
            result.Add(new VectorCandidate(_ids[slot], score, new DateTimeOffset(_createdTicks[slot], TimeSpan.Zero)));
        }

        result.Reverse();
        return result;
    }

    /// <summary>The unit centroid of a conversation: mean of its messages' vectors plus its latest summary's, weighted.</summary>
    private bool Centroid(int conversation, float summaryWeight, Span<float> target, Span<float> scratch)
    {
        var summarySlot = NoSlot;
        var messages = 0;
        foreach (var slot in _conversationSlots[conversation])
        {
            if (_kind[slot] == (byte)EntryKind.Summary)
            {
                if (summarySlot == NoSlot || _revision[slot] > _revision[summarySlot])
                {
                    summarySlot = slot;
                }

                continue;
            }

            AddTo(slot, target, scratch);
            messages++;
        }

        if (messages > 0)
        {
            VectorMath.Normalize(target);
        }

        if (summarySlot != NoSlot && (summaryWeight > 0 || messages == 0))
        {
            scratch.Clear();
            AddTo(summarySlot, scratch, stackalloc float[0]);
            TensorPrimitives.MultiplyAdd(scratch, messages == 0 ? 1 : summaryWeight, target, target);
        }

        VectorMath.Normalize(target);
        return messages > 0 || summarySlot != NoSlot;
    }

    private void AddTo(int slot, Span<float> target, Span<float> scratch)
    {
        var offset = slot * _dimensions;
        if (Precision == VectorPrecision.Int8)
        {
            var buffer = scratch.Length >= _dimensions ? scratch[.._dimensions] : new float[_dimensions];
            VectorMath.AddDequantized(_quantized.AsSpan(offset, _dimensions), _scales[slot], target, buffer);
        }
        else
        {
            TensorPrimitives.Add(target, _floats.AsSpan(offset, _dimensions), target);
        }
    }

    /// <summary>The slot's vector in the stored format of <see cref="Precision"/> (which <see cref="Add"/> takes back as it is).</summary>
    private byte[] StoredOf(int slot) => Precision == VectorPrecision.Int8
        ? VectorBytes.Int8(_quantized.AsSpan(slot * _dimensions, _dimensions), _scales[slot])
        : VectorBytes.Encode(_floats.AsSpan(slot * _dimensions, _dimensions), VectorPrecision.Float32);

    private float[] VectorOf(int slot)
    {
        var vector = new float[_dimensions];
        AddTo(slot, vector, new float[_dimensions]);
        return vector;
    }

    private void Add(VectorRow row)
    {
        if (_dimensions == 0)
        {
            _dimensions = row.Dimensions;
        }

        if (_count == _ids.Length)
        {
            Grow(Math.Max(256, _ids.Length * 2));
        }

        var slot = _count++;
        if (!_conversationOrdinal.TryGetValue(row.ConversationId, out var conversation))
        {
            conversation = _conversationIds.Count;
            _conversationIds.Add(row.ConversationId);
            _conversationOrdinal[row.ConversationId] = conversation;
        }

        _ids[slot] = row.EntryId;
        _conversation[slot] = conversation;
        _kind[slot] = (byte)row.Kind;
        _sequence[slot] = row.Sequence;
        _revision[slot] = row.Revision ?? 0;
        _role[slot] = row.Role is null ? (byte)0 : RoleCode(row.Role);
        _createdTicks[slot] = row.CreatedAt.UtcTicks;
        _alive[slot] = true;
        _previous[slot] = NoSlot;
        _next[slot] = NoSlot;
        _terms[slot] = row.Terms;

        // Stored as int8, a vector is copied as it is: decoding it to floats to quantize it again gave the same bytes.
        var int8 = Precision == VectorPrecision.Int8;
        if (!int8 || !VectorBytes.TryReadUnitInt8(row.Stored, row.Dimensions, _quantized.AsSpan(slot * _dimensions, _dimensions), out _scales[slot]))
        {
            var unit = VectorBytes.Decode(row.Stored, row.Dimensions);
            VectorMath.Normalize(unit);
            if (int8)
            {
                _scales[slot] = VectorMath.Quantize(unit, _quantized.AsSpan(slot * _dimensions, _dimensions));
            }
            else
            {
                unit.CopyTo(_floats.AsSpan(slot * _dimensions, _dimensions));
            }
        }

        _slotById[row.EntryId] = slot;
        if (!_conversationSlots.TryGetValue(conversation, out var slots))
        {
            _conversationSlots[conversation] = slots = [];
        }

        slots.Add(slot);
        if (row.Kind == EntryKind.Message)
        {
            _messageSlot[(conversation, row.Sequence)] = slot;
            if (_messageSlot.TryGetValue((conversation, row.Sequence - 1), out var previous))
            {
                _previous[slot] = previous;
                _next[previous] = slot;
            }

            if (_messageSlot.TryGetValue((conversation, row.Sequence + 1), out var next))
            {
                _next[slot] = next;
                _previous[next] = slot;
            }
        }

        foreach (var term in row.Terms)
        {
            _documentFrequency[term] = _documentFrequency.GetValueOrDefault(term) + 1;
        }

        _live++;
    }

    private void Remove(int slot)
    {
        if (!_alive[slot])
        {
            return;
        }

        _alive[slot] = false;
        _live--;
        _slotById.Remove(_ids[slot]);
        var conversation = _conversation[slot];
        if (_conversationSlots.TryGetValue(conversation, out var slots))
        {
            slots.Remove(slot);
            if (slots.Count == 0)
            {
                _conversationSlots.Remove(conversation);
            }
        }

        if (_kind[slot] == (byte)EntryKind.Message)
        {
            _messageSlot.Remove((conversation, _sequence[slot]));
            if (_previous[slot] != NoSlot)
            {
                _next[_previous[slot]] = NoSlot;
            }

            if (_next[slot] != NoSlot)
            {
                _previous[_next[slot]] = NoSlot;
            }

            _previous[slot] = NoSlot;
            _next[slot] = NoSlot;
        }

        foreach (var term in _terms[slot])
        {
            var df = _documentFrequency.GetValueOrDefault(term) - 1;
            if (df <= 0)
            {
                _documentFrequency.Remove(term);
            }
            else
            {
                _documentFrequency[term] = df;
            }
        }

        _terms[slot] = [];
    }

    private void RemoveMessages(RemovedMessages range)
        => RemoveConversation(range.ConversationId,
            slot => _kind[slot] == (byte)EntryKind.Message && _sequence[slot] >= range.FromSequence && _sequence[slot] <= range.ToSequence);

    /// <summary>The conversation's entries (those <paramref name="which"/> picks, or all).</summary>
    private void RemoveConversation(Guid conversationId, Func<int, bool>? which = null)
    {
        if (_conversationOrdinal.TryGetValue(conversationId, out var ordinal) && _conversationSlots.TryGetValue(ordinal, out var slots))
        {
            foreach (var slot in slots.ToArray())
            {
                if (which is null || which(slot))
                {
                    Remove(slot);
                }
            }
        }
    }

    private void Grow(int capacity)
    {
        Array.Resize(ref _ids, capacity);
        Array.Resize(ref _conversation, capacity);
        Array.Resize(ref _kind, capacity);
        Array.Resize(ref _sequence, capacity);
        Array.Resize(ref _revision, capacity);
        Array.Resize(ref _role, capacity);
        Array.Resize(ref _createdTicks, capacity);
        Array.Resize(ref _alive, capacity);
        Array.Resize(ref _previous, capacity);
        Array.Resize(ref _next, capacity);
        Array.Resize(ref _terms, capacity);
        Array.Resize(ref _scales, capacity);
        if (Precision == VectorPrecision.Int8)
        {
            Array.Resize(ref _quantized, capacity * _dimensions);
        }
        else
        {
            Array.Resize(ref _floats, capacity * _dimensions);
        }
    }

    /// <summary>Drops the slots of removed vectors (rows are re-added in slot order, so links and statistics are rebuilt).</summary>
    private void Compact()
    {
        var rows = new List<VectorRow>(_live);
        for (var slot = 0; slot < _count; slot++)
        {
            if (_alive[slot])
            {
                rows.Add(new VectorRow(_ids[slot], _conversationIds[_conversation[slot]], (EntryKind)_kind[slot], _sequence[slot],
                    _revision[slot], RoleName(_role[slot]), new DateTimeOffset(_createdTicks[slot], TimeSpan.Zero), Model, StoredOf(slot), _dimensions, _terms[slot]));
            }
        }

        Clear();
        foreach (var row in rows)
        {
            Add(row);
        }
    }

    private void Clear()
    {
        _slotById.Clear();
        _messageSlot.Clear();
        _conversationOrdinal.Clear();
        _conversationIds.Clear();
        _conversationSlots.Clear();
        _documentFrequency.Clear();
        _count = 0;
        _live = 0;
        _dimensions = 0;
        _ids = [];
        _conversation = [];
        _kind = [];
        _sequence = [];
        _revision = [];
        _role = [];
        _createdTicks = [];
        _alive = [];
        _previous = [];
        _next = [];
        _terms = [];
        _quantized = [];
        _floats = [];
        _scales = [];
    }

    private static byte RoleCode(string role) => role switch
    {
        "user" => 1,
        "assistant" => 2,
        "system" => 3,
        "tool" => 4,
        _ => 5,
    };

    private static string? RoleName(byte code) => code switch
    {
        1 => "user",
        2 => "assistant",
        3 => "system",
        4 => "tool",
        _ => null,
    };
}
