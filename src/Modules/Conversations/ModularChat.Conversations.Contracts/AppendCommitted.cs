namespace ModularChat.Conversations.Contracts;

/// <summary>
/// One notice per append transaction, published through Wolverine's outbox in that transaction: the messages and the
/// notice commit together, or neither does. A transaction may carry the appends of several requests and conversations
/// of one tenant (group commit); the notice lists what each conversation gained. For modules that need to know that
/// conversations grew, and by how much, without receiving every <see cref="MessageAppended"/> event and its content
/// (a 1,000-message batch is one entry, not 1,000). It is a message, not an event of a conversation's stream.
/// </summary>
/// <param name="Appends">What each conversation gained in the transaction (one entry per conversation).</param>
public sealed record AppendsCommitted(IReadOnlyList<AppendCommitted> Appends);

/// <summary>What one conversation gained in one append transaction (an entry of <see cref="AppendsCommitted"/>).</summary>
/// <param name="ConversationId">The conversation that grew.</param>
/// <param name="FromSequence">The first message sequence the transaction stored.</param>
/// <param name="ToSequence">The last message sequence the transaction stored (the conversation's message count after it).</param>
/// <param name="Messages">How many messages it stored (duplicates answered from earlier appends are not counted).</param>
/// <param name="Tokens">Their o200k tokens, together.</param>
/// <param name="AppendedAt">When the server stored them.</param>
public sealed record AppendCommitted(Guid ConversationId, long FromSequence, long ToSequence, int Messages, long Tokens, DateTimeOffset AppendedAt);
