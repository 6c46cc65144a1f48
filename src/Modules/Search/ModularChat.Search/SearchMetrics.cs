using System.Diagnostics.Metrics;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Search.Vectors;

namespace ModularChat.Search;

/// <summary>The Search module's instruments (one set per process).</summary>
internal sealed class SearchMetrics
{
    private readonly Counter<long> _queries;
    private readonly Histogram<double> _duration;
    private readonly Counter<long> _embeddings;
    private readonly Histogram<double> _embeddingDuration;
    private readonly Counter<long> _embeddingFailures;
    private readonly Counter<long> _givenUp;

    public SearchMetrics(IMeterFactory meters, IVectorIndex index)
    {
        var meter = meters.Create(ModularChatTelemetry.SourceName);
        _queries = meter.CreateCounter<long>(MetricNames.SearchQueries, "{query}", "Searches, by mode");
        _duration = meter.CreateHistogram<double>(MetricNames.SearchDuration, "ms", "Time to answer a search, by mode");
        _embeddings = meter.CreateCounter<long>(MetricNames.SearchEmbeddings, "{entry}", "Entries embedded in the background, by generator");
        _embeddingDuration = meter.CreateHistogram<double>(MetricNames.SearchEmbeddingDuration, "ms", "Time to embed one batch of entries, by generator");
        _embeddingFailures = meter.CreateCounter<long>(MetricNames.SearchEmbeddingFailures, "{batch}", "Embedding batches that failed and were deferred");
        _givenUp = meter.CreateCounter<long>(
            MetricNames.SearchEmbeddingsGivenUp, "{entry}", "Entries whose text the embedding model kept refusing, left out of semantic search");
        meter.CreateObservableGauge(MetricNames.SearchIndexVectors, () => index.Statistics().Vectors, "{vector}", "Vectors held in memory for search on this node");
        meter.CreateObservableGauge(MetricNames.SearchIndexBytes, () => index.Statistics().Bytes, "By", "Approximate memory of the in-memory vector index on this node");
    }

    public void Searched(string mode, double milliseconds)
    {
        var tag = new KeyValuePair<string, object?>("mode", mode);
        _queries.Add(1, tag);
        _duration.Record(milliseconds, tag);
    }

    public void Embedded(int count, bool builtIn, double milliseconds)
    {
        var tag = new KeyValuePair<string, object?>("generator", builtIn ? "built-in" : "remote");
        _embeddings.Add(count, tag);
        _embeddingDuration.Record(milliseconds, tag);
    }

    public void EmbeddingFailed() => _embeddingFailures.Add(1);

    public void EmbeddingsGivenUp(int count) => _givenUp.Add(count);
}
