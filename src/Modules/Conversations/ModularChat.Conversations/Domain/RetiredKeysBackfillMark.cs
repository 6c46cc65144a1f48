namespace ModularChat.Conversations.Domain;

/// <summary>
/// How far the retired keys' backfill (<c>RetiredKeysBackfill</c>) has read the archive: every archived message written
/// before <see cref="ReadFrom"/> has its key, so a start reads the archive from there on only. One document for the
/// deployment; none before the first complete pass (an upgrade), which reads the whole archive.
/// </summary>
public sealed record RetiredKeysBackfillMark
{
    /// <summary>The one document's id.</summary>
    public const string Archive = "archive";

    public string Id { get; init; } = Archive;

    /// <summary>Where the next pass starts (PostgreSQL's clock, as the archive's <c>mt_last_modified</c>).</summary>
    public DateTimeOffset ReadFrom { get; init; }

    /// <summary>When the pass that wrote it completed, for whoever reads the table.</summary>
    public DateTimeOffset CompletedAt { get; init; }
}
