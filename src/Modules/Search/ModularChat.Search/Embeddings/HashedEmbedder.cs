using ModularChat.BuildingBlocks.Background;
using System.Numerics.Tensors;
using Microsoft.Extensions.AI;

namespace ModularChat.Search.Embeddings;

/// <summary>
/// The built-in offline embedder: a bag of word stems and character 3-, 4- and 5-grams, each hashed (with a sign)
/// into a fixed number of dimensions, sub-linearly weighted and L2-normalized.
/// </summary>
/// <remarks>
/// What it is: deterministic (the same text gives the same vector in every process), needs no network and no
/// downloaded weights, and embeds thousands of messages per second on one core. Stems make "painting", "painted"
/// and "paints" meet; character n-grams catch shared roots, compounds, misspellings and names ("Mel"/"Melanie",
/// "adopt"/"adoption"). At search time a query's words are weighted by how rare they are among the tenant's own
/// entries (inverse document frequency), which makes it a strong lexical-semantic retriever.
/// What it is not: a language model. It knows no synonyms ("car"/"automobile") nor paraphrases that share no
/// letters, and hashing collisions add a little noise. Tenants that need real semantics configure an
/// OpenAI-compatible embeddings endpoint.
/// </remarks>
internal sealed class HashedEmbedder
{
    /// <summary>Version of the algorithm: part of the model id, so a change re-embeds every entry.</summary>
    public const string Version = "v1";

    private static readonly int[] GramSizes = [3, 4, 5];

    public HashedEmbedder(int dimensions)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimensions, 64);
        Dimensions = dimensions;
        ModelId = $"modularchat-hashed-{Version}-d{dimensions}";
    }

    public int Dimensions { get; }

    /// <summary>The model id stored with every vector this embedder makes.</summary>
    public string ModelId { get; }

    /// <summary>The embedding of <paramref name="text"/>; <paramref name="stemWeight"/> weights words (a query's rarity weights), 1 when null.</summary>
    public float[] Embed(string text, Func<string, float>? stemWeight = null)
    {
        var features = new Dictionary<ulong, float>();
        foreach (var token in TextAnalyzer.Tokens(text))
        {
            var stem = TextAnalyzer.Stem(token);
            var weight = stemWeight?.Invoke(stem) ?? 1f;
            if (weight <= 0)
            {
                continue;
            }

            Add(features, StableHash.Of("w:", stem), weight);

            // Character n-grams of the word with boundary marks ("<pai", "ing>"): together they weigh about one word.
            var marked = $"<{token}>";
            var grams = 0;
            foreach (var n in GramSizes)
            {
                grams += Math.Max(0, marked.Length - n + 1);
            }

            var gramWeight = weight / MathF.Sqrt(grams);
            foreach (var n in GramSizes)
            {
                for (var i = 0; i + n <= marked.Length; i++)
                {
                    Add(features, StableHash.Of("c:", marked.AsSpan(i, n)), gramWeight);
                }
            }
        }

        var vector = new float[Dimensions];
        foreach (var (hash, raw) in features)
        {
            // Repeats count sub-linearly: a word said five times is not five times the topic.
            var value = raw > 1 ? 1 + MathF.Log(raw) : raw;
            var index = (int)(hash % (ulong)Dimensions);
            vector[index] += (hash & (1UL << 40)) != 0 ? value : -value;
        }

        var norm = TensorPrimitives.Norm(vector);
        if (norm > 0)
        {
            TensorPrimitives.Divide(vector, norm, vector);
        }

        return vector;
    }

    private static void Add(Dictionary<ulong, float> features, ulong key, float weight)
        => features[key] = features.GetValueOrDefault(key) + weight;
}

/// <summary>
/// The built-in embedder behind Microsoft.Extensions.AI's <see cref="IEmbeddingGenerator{TInput,TEmbedding}"/>, as the
/// background worker uses it: batches are embedded on a lowest-priority thread, so indexing never competes with requests
/// for the cores (a query's own embedding is computed in the request, at normal priority).
/// </summary>
internal sealed class HashedEmbeddingGenerator(HashedEmbedder embedder) : IEmbeddingGenerator<string, Embedding<float>>
{
    private readonly EmbeddingGeneratorMetadata _metadata = new("modularchat-hashed", defaultModelId: embedder.ModelId, defaultModelDimensions: embedder.Dimensions);
    private readonly LowPriorityCpu _cpu = new(1, "search-embeddings");

    public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(
        IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
        => _cpu.RunAsync(() =>
        {
            var result = new GeneratedEmbeddings<Embedding<float>>();
            foreach (var value in values)
            {
                cancellationToken.ThrowIfCancellationRequested();
                result.Add(new Embedding<float>(embedder.Embed(value)) { ModelId = embedder.ModelId, CreatedAt = DateTimeOffset.UtcNow });
            }

            return result;
        }, cancellationToken);

    public object? GetService(Type serviceType, object? serviceKey = null)
        => serviceKey is not null ? null
            : serviceType == typeof(EmbeddingGeneratorMetadata) ? _metadata
            : serviceType.IsInstanceOfType(this) ? this
            : null;

    public void Dispose() => _cpu.Dispose();
}
