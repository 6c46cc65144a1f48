using System.Diagnostics.Metrics;
using ModularChat.BuildingBlocks.Messaging;
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
    private readonly Counter<long> _cleanupFailures;

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
        _cleanupFailures = meter.CreateCounter<long>(MetricNames.SearchCleanupFailures, "{message}",
            "Clean-ups of the search read model after a deletion or a retention step given up (outcome: dead_letter, after " +
            "Messaging:MaxAttemptsWhileDatabaseAnswers database errors while the database answered, or the retries of any other failure), " +
            "by event (deletion, retention) and error (the exception's type)");
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

    /// <summary>A clean-up after <paramref name="event"/> (deletion, retention) dead-lettered after <paramref name="error"/>.</summary>
    public void CleanupFailed(string @event, string error)
        => _cleanupFailures.Add(1, new KeyValuePair<string, object?>("event", @event), new KeyValuePair<string, object?>("error", error),
            new KeyValuePair<string, object?>("outcome", IDeadLetterReport.Outcome));
}
