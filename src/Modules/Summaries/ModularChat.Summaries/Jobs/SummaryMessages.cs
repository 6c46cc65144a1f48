using Wolverine.Attributes;

namespace ModularChat.Summaries.Jobs;

/// <summary>
/// A durable job: bring the conversation's summary up to (at least) <paramref name="UpToSequence"/>. Idempotent: when the
/// summary already covers that sequence (or, for a rebuild, was already rebuilt by <paramref name="RebuildId"/>) it does nothing.
/// The tenant travels on the envelope.
/// </summary>
/// <param name="Reason">Why it was queued: the strategy's reason, "manual" or "resummarize".</param>
/// <param name="TriggeredAt">When the message that made the summary due was stored (summary lag is measured from it).</param>
/// <param name="RebuildId">Set for a rebuild: summarize everything again from the first message, ignoring the previous summary.</param>
/// <param name="Continues">
/// Queued by a job that stopped part way (<see cref="SummariesOptions.MaxChunksPerJob"/>, or half its time gone) after storing
/// the revision so far: it goes on from that revision at once, without asking the strategy again (a rebuild included).
/// </param>
/// <param name="DeferredSince">
/// When the job was first put off because its tenant ran its share of the node's job slots (<see cref="TenantJobShares"/>):
/// its place in its tenant's line, kept across deferrals and nodes. Null for a job never put off, and again once it starts.
/// </param>
[MessageIdentity(Identity)]
public sealed record SummarizeConversation(
    Guid ConversationId, long UpToSequence, string Reason, DateTimeOffset? TriggeredAt = null, Guid? RebuildId = null, bool Continues = false,
    DateTimeOffset? DeferredSince = null)
{
    public const string Identity = "summaries.summarize-conversation";
}

/// <summary>
/// Sent after the module first writes something for a conversation: if the conversation is gone by then (its deletion
/// overtook a message event or a job), everything the module wrote for it is removed.
/// </summary>
[MessageIdentity("summaries.verify-conversation")]
public sealed record VerifySummarizedConversation(Guid ConversationId);
