using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using ModularChat.Search.Embeddings;
using ModularChat.Search.Projection;
using ModularChat.Search.Searching;
using ModularChat.Search.Storage;
using ModularChat.Search.Vectors;

namespace ModularChat.Search.Tests;

/// <summary>The pure parts: analysis, the built-in embedder, the SIMD kernels, the in-memory index, highlighting.</summary>
public sealed class UnitTests
{
    [Fact]
    public void The_analyzer_drops_stop_words_and_clitics_and_stems_inflections()
    {
        Assert.Equal(["caroline", "went", "lgbtq", "support", "groups"], TextAnalyzer.Tokens("Caroline's went to the LGBTQ support-groups!"));
        Assert.Equal(["café", "münchen"], TextAnalyzer.Tokens("Café in München"));
        Assert.Equal(TextAnalyzer.Stem("painting"), TextAnalyzer.Stem("painted"));
        Assert.Equal(TextAnalyzer.Stem("paints"), TextAnalyzer.Stem("paint"));
        Assert.Equal(TextAnalyzer.Stem("stories"), TextAnalyzer.Stem("story"));
    }

    [Fact]
    public void An_entry_is_embedded_within_the_token_budget_whatever_its_script()
    {
        var tokens = new ModularChat.BuildingBlocks.Tokenization.O200kTokenCounter();
        var may = new DateTime(2023, 5, 8, 0, 0, 0, DateTimeKind.Utc);
        // 7,000 characters of Japanese: within the 8,000-character cut, but several thousand tokens.
        var japanese = string.Concat(Enumerable.Repeat("今日は図書館で歴史の本を読みました。", 400))[..7000];
        var english = "I went to a support group yesterday and it was really powerful.";

        var cut = EmbeddingText.For(EntryKind.Message, "Yuki", japanese, may, 500, tokens);
        var whole = EmbeddingText.For(EntryKind.Message, "Caroline", english, may, 500, tokens);

        Assert.True(tokens.Count(japanese) > 3000, tokens.Count(japanese).ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.InRange(tokens.Count(cut), 400, 500);
        Assert.StartsWith("Yuki: 今日は", cut, StringComparison.Ordinal);
        Assert.EndsWith(" (May 2023)", cut, StringComparison.Ordinal);
        Assert.Equal($"Caroline: {english} (May 2023)", whole);
        // Emoji are two UTF-16 characters and several tokens each: never cut between the two halves of one.
        var emoji = EmbeddingText.For(EntryKind.Message, null, string.Concat(Enumerable.Repeat("🎉", 2000)), may, 100, tokens);
        Assert.InRange(tokens.Count(emoji), 50, 100);
        Assert.False(char.IsHighSurrogate(emoji[emoji.Length - " (May 2023)".Length - 1]));
    }

    [Fact]
    public void The_built_in_embedder_is_deterministic_and_unit_length()
    {
        var a = new HashedEmbedder(1024).Embed("The hotels by the river have great views.");
        var b = new HashedEmbedder(1024).Embed("The hotels by the river have great views.");
        Assert.Equal(a, b);
        Assert.Equal(1024, a.Length);
        Assert.Equal(1f, TensorPrimitives.Norm(a), 3);
        Assert.Equal("modularchat-hashed-v1-d512", new HashedEmbedder(512).ModelId);
        Assert.All(new HashedEmbedder(256).Embed("the of and"), v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData("photography classes", "She took photographs in class.", "The soup needs more salt.")]
    [InlineData("adopting a child", "We looked into adoption agencies.", "The train was late again.")]
    [InlineData("misspeled wrods", "misspelled words everywhere", "a quiet afternoon walk")]
    [InlineData("Mel's kids", "Melanie took her kid to the park", "Caroline read a novel")]
    public void The_built_in_embedder_puts_related_forms_closer_than_unrelated_text(string query, string related, string unrelated)
    {
        var embedder = new HashedEmbedder(1024);
        var q = embedder.Embed(query);
        Assert.True(TensorPrimitives.Dot(q, embedder.Embed(related)) > TensorPrimitives.Dot(q, embedder.Embed(unrelated)) + 0.05f);
    }

    [Theory]
    [InlineData(1024)]
    [InlineData(1000)]
    [InlineData(37)]
    [InlineData(7)]
    public void The_int8_dot_product_matches_the_scalar_one(int length)
    {
        var random = new Random(length);
        var a = new sbyte[length];
        var b = new sbyte[length];
        for (var i = 0; i < length; i++)
        {
            a[i] = (sbyte)random.Next(-127, 128);
            b[i] = (sbyte)random.Next(-127, 128);
        }

        Assert.Equal(a.Zip(b).Sum(p => p.First * p.Second), VectorMath.Dot(a, b));
    }

    [Fact]
    public void Quantization_keeps_negative_peaks_and_cosine()
    {
        float[] vector = [-0.9f, 0.1f, 0.3f, -0.2f];
        VectorMath.Normalize(vector);
        var q = new sbyte[4];
        var scale = VectorMath.Quantize(vector, q);
        Assert.Equal(-127, q[0]);
        Assert.Equal(1f, VectorMath.Dot(q, q) * scale * scale, 2);
    }

    [Fact]
    public void Stored_vectors_are_told_apart_by_length_and_read_back()
    {
        var random = new Random(7);
        var vector = Enumerable.Range(0, 1024).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        var unit = vector.ToArray();
        VectorMath.Normalize(unit);

        var int8 = VectorBytes.Encode(vector, VectorPrecision.Int8);
        var float32 = VectorBytes.Encode(vector, VectorPrecision.Float32);

        Assert.Equal(1028, int8.Length);
        Assert.Equal(4096, float32.Length);
        Assert.Equal(VectorPrecision.Int8, VectorBytes.FormatOf(int8.Length, 1024));
        Assert.Equal(VectorPrecision.Float32, VectorBytes.FormatOf(float32.Length, 1024));
        Assert.Null(VectorBytes.FormatOf(2048, 1024));
        Assert.Equal(vector, VectorBytes.Decode(float32, 1024)); // exact
        var restored = VectorBytes.Decode(int8, 1024);
        Assert.True(TensorPrimitives.CosineSimilarity(unit, restored) > 0.999f);
        var error = new float[1024];
        TensorPrimitives.Subtract(unit, restored, error);
        Assert.InRange(MathF.Abs(TensorPrimitives.MaxMagnitude(error)), 0f, 0.001f); // at most half a step of 1/127 of the largest component
        Assert.Empty(VectorBytes.Decode(int8.AsSpan(1), 1024)); // neither format: skipped, not misread

        // Quantizing what was read gives back the stored bytes, so the in-memory index holds exactly what was stored.
        VectorMath.Normalize(restored);
        var again = new sbyte[1024];
        VectorMath.Quantize(restored, again);
        Assert.Equal(int8.AsSpan(4).ToArray(), MemoryMarshal.AsBytes(again.AsSpan()).ToArray());
    }

    [Theory]
    [InlineData(VectorPrecision.Int8)]
    [InlineData(VectorPrecision.Float32)]
    public void The_vector_set_ranks_by_cosine_filters_and_lends_neighbours_their_scores(VectorPrecision precision)
    {
        var set = new TenantVectorSet("t", "m", precision);
        var conversation = Guid.NewGuid();
        var other = Guid.NewGuid();
        var t0 = DateTimeOffset.UnixEpoch;
        var rows = new List<VectorRow>
        {
            Row(conversation, 1, [1, 0, 0, 0], "user", t0),
            Row(conversation, 2, [0, 1, 0, 0], "assistant", t0.AddDays(1)),   // the answer to turn 1
            Row(conversation, 3, [0, 0, 1, 0], "user", t0.AddDays(2)),
            Row(other, 1, [0.9f, 0.1f, 0, 0], "user", t0.AddDays(3)),
            Row(other, 2, [0, 0, 0, 1], "assistant", t0.AddDays(4), "other-model"),
        };
        set.Apply(rows, []);

        var query = new float[] { 1, 0, 0, 0 };
        var plain = set.Search(new VectorQuery(query, new VectorFilter(), 10, 0, 0));
        var smoothed = set.Search(new VectorQuery(query, new VectorFilter(), 10, 0.5f, 0));

        Assert.Equal(4, set.Count); // the other model's vector is not held
        Assert.Equal(rows[0].EntryId, plain[0].EntryId);
        Assert.Equal(rows[3].EntryId, plain[1].EntryId);
        Assert.DoesNotContain(plain, c => c.EntryId == rows[1].EntryId); // unrelated: cosine 0
        Assert.Equal(0.5, smoothed.Single(c => c.EntryId == rows[1].EntryId).Score, 2); // but it answers turn 1
        Assert.Equal([rows[1].EntryId], set.Search(new VectorQuery(query, new VectorFilter(Role: "assistant"), 10, 0.5f, 0)).Select(c => c.EntryId));
        Assert.Equal(2, set.Search(new VectorQuery(query, new VectorFilter(ConversationId: other), 10, 0, 0)).Count + 1);
        Assert.Equal(new[] { rows[1].EntryId, rows[3].EntryId }.Order(),
            set.Search(new VectorQuery(query, new VectorFilter(From: t0.AddDays(1), To: t0.AddDays(3)), 10, 0.5f, 0)).Select(c => c.EntryId).Order());
        Assert.Empty(set.Search(new VectorQuery(new float[4], new VectorFilter(), 10, 0.5f, 0.5f)));
        Assert.DoesNotContain(set.Search(new VectorQuery(query, new VectorFilter(ConversationId: conversation, ExcludeFromSequence: 1, ExcludeToSequence: 2), 10, 0, 0)),
            c => c.EntryId == rows[0].EntryId || c.EntryId == rows[1].EntryId);
        Assert.Equal([rows[3].EntryId], set.Search(new VectorQuery(query, new VectorFilter(AllowedIds: new HashSet<Guid> { rows[3].EntryId }), 10, 0, 0)).Select(c => c.EntryId));

        set.Apply([], [conversation]);
        Assert.Equal([rows[3].EntryId], set.Search(new VectorQuery(query, new VectorFilter(), 10, 0.5f, 0.5f)).Select(c => c.EntryId));
    }

    [Fact]
    public void The_vector_set_compacts_after_many_updates_without_changing_results()
    {
        var set = new TenantVectorSet("t", "m", VectorPrecision.Int8);
        var random = new Random(3);
        var conversation = Guid.NewGuid();
        var rows = Enumerable.Range(1, 3000).Select(i => Row(conversation, i, [.. Enumerable.Range(0, 16).Select(_ => (float)random.NextDouble() - 0.5f)], "user", DateTimeOffset.UnixEpoch)).ToList();
        set.Apply(rows, []);
        var query = VectorBytes.Decode(rows[1234].Stored, rows[1234].Dimensions);
        var before = set.Search(new VectorQuery(query, new VectorFilter(), 5, 0.5f, 0.25f));

        set.Apply(rows, []); // every vector rewritten: the old slots are dead, then compacted away
        set.Apply(rows.Take(2000).ToList(), []);

        Assert.Equal(3000, set.Count);
        Assert.Equal(before.Select(c => c.EntryId), set.Search(new VectorQuery(query, new VectorFilter(), 5, 0.5f, 0.25f)).Select(c => c.EntryId));
        Assert.Equal(rows[1234].EntryId, before[0].EntryId);
    }

    [Fact]
    public void Headline_markers_become_highlight_offsets_and_escaped_marks()
    {
        // "<" and ">" travel as U+000E and U+000F; other characters (angle brackets too) come back as they are.
        var (snippet, highlights, html) = HitDetails.Mark("a \u000Eb\u000F \u0002cat\u0003 & \u0002dog\u0003 \u27E8v\u27E9");
        Assert.Equal("a <b> cat & dog \u27E8v\u27E9", snippet);
        Assert.Equal([new ModularChat.Search.Searching.Highlight(6, 3), new ModularChat.Search.Searching.Highlight(12, 3)], highlights);
        Assert.Equal("a &lt;b&gt; <mark>cat</mark> &amp; <mark>dog</mark> \u27E8v\u27E9", html);
    }

    [Fact]
    public void Summary_entry_ids_are_stable_per_conversation_and_revision()
    {
        var conversation = Guid.NewGuid();
        Assert.Equal(SearchEntriesProjection.SummaryEntryId(conversation, 2), SearchEntriesProjection.SummaryEntryId(conversation, 2));
        Assert.NotEqual(SearchEntriesProjection.SummaryEntryId(conversation, 1), SearchEntriesProjection.SummaryEntryId(conversation, 2));
        Assert.NotEqual(SearchEntriesProjection.SummaryEntryId(Guid.NewGuid(), 1), SearchEntriesProjection.SummaryEntryId(conversation, 1));
    }

    [Fact]
    public void An_int8_vector_set_takes_stored_int8_vectors_as_they_are_and_others_as_before()
    {
        var random = new Random(5);
        var conversation = Guid.NewGuid();
        var vectors = Enumerable.Range(0, 200).Select(_ => Enumerable.Range(0, 1024).Select(_ => (float)random.NextDouble() * 2 - 1).ToArray()).ToList();
        var stored = vectors.Select((v, i) => Row(conversation, i + 1, v, "user", DateTimeOffset.UnixEpoch, precision: VectorPrecision.Int8)).ToList();
        // The odd one out: int8 bytes whose largest magnitude is not 127 (not written by VectorBytes.Encode).
        var halved = stored[0].Stored.ToArray();
        for (var i = 4; i < halved.Length; i++)
        {
            halved[i] = (byte)(sbyte)((sbyte)halved[i] / 2);
        }

        stored[0] = stored[0] with { Stored = halved };
        var set = new TenantVectorSet("t", "m", VectorPrecision.Int8);
        set.Apply(stored, []);

        var held = set.Vectors(stored.Select(r => r.EntryId).ToList());
        foreach (var row in stored)
        {
            // What the set held when every vector was decoded to floats, normalized and quantized again.
            var unit = VectorBytes.Decode(row.Stored, row.Dimensions);
            VectorMath.Normalize(unit);
            var quantized = new sbyte[unit.Length];
            var scale = VectorMath.Quantize(unit, quantized);
            var expected = quantized.Select(q => q * scale).ToArray();
            Assert.Equal(expected, held[row.EntryId], (a, b) => Math.Abs(a - b) < 1e-6f);
            Assert.Equal(1, System.Numerics.Tensors.TensorPrimitives.Norm(held[row.EntryId]), 2);
        }

        Assert.False(VectorBytes.TryReadUnitInt8(halved, 1024, new sbyte[1024], out _));
        Assert.True(VectorBytes.TryReadUnitInt8(stored[1].Stored, 1024, new sbyte[1024], out _));
        Assert.False(VectorBytes.TryReadUnitInt8(VectorBytes.Encode(vectors[1], VectorPrecision.Float32), 1024, new sbyte[1024], out _));
    }

    private static VectorRow Row(Guid conversation, long sequence, float[] vector, string role, DateTimeOffset at, string model = "m",
        VectorPrecision precision = VectorPrecision.Float32)
        => new(Guid.NewGuid(), conversation, EntryKind.Message, sequence, null, role, at, model, VectorBytes.Encode(vector, precision), vector.Length, [1, 2]);
}
