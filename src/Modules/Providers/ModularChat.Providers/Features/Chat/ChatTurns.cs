using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json;
using FluentValidation;
using Marten;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Errors;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.BuildingBlocks.Validation;
using ModularChat.Conversations.Contracts;
using ModularChat.Providers.Clients;
using ModularChat.Providers.Domain;
using ModularChat.Providers.Mcp;

namespace ModularChat.Providers.Features.Chat;

/// <summary>Body of <c>POST /api/conversations/{id}/chat</c>.</summary>
/// <param name="Content">The user's message.</param>
/// <param name="Provider">The provider to use, by name (default: the tenant's default provider).</param>
/// <param name="Model">The model to use (default: the provider's chat model).</param>
/// <param name="ToolServers">The MCP servers whose tools the model may call, by name (default: all of the tenant's; [] for none).</param>
/// <param name="ExternalId">The client's id of the user message (idempotent like any append).</param>
public sealed record ChatRequest(string? Content, string? Provider, string? Model, List<string>? ToolServers, string? ExternalId);

/// <summary>A stored message of the turn.</summary>
public sealed record ChatMessageRef(Guid Id, long Sequence);

/// <summary>The model's answer, as stored.</summary>
public sealed record ChatAnswer(Guid Id, long Sequence, string Content);

/// <summary>A tool the model called during the turn, and what it returned (both stored as tool messages).</summary>
public sealed record ChatToolCall(string CallId, string Server, string Tool, string Arguments, string Result, bool Failed, long CallSequence, long ResultSequence);

/// <summary>Tokens the provider reported for the whole turn (every round).</summary>
public sealed record ChatUsage(long? InputTokens, long? OutputTokens, long? TotalTokens);

/// <summary>How much of the conversation the model was given.</summary>
public sealed record ChatContextInfo(int Messages, int Tokens, long? SummaryThroughSequence);

/// <summary>The outcome of a chat turn.</summary>
public sealed record ChatTurnResponse(
    Guid ConversationId,
    ChatMessageRef UserMessage,
    ChatAnswer Answer,
    IReadOnlyList<ChatToolCall> ToolCalls,
    string Provider,
    string Model,
    ChatUsage Usage,
    ChatContextInfo Context,
    double DurationMs)
{
    /// <summary>
    /// True when the request repeated the external id of a turn that was answered already: this is that stored turn (no
    /// model was asked again; its tool calls are in the conversation, not repeated here).
    /// </summary>
    public bool Replayed { get; init; }
}

internal sealed class ChatRequestValidator : AbstractValidator<ChatRequest>
{
    public ChatRequestValidator(IOptions<ChatTurnOptions> options, IOptions<McpOptions> mcp)
    {
        var max = options.Value.MaxContentLength;
        RuleFor(r => r.Content).Must(c => !string.IsNullOrWhiteSpace(c)).WithMessage("'content' is required and must not be empty.");
        RuleFor(r => r.Content).Must(c => c is null || c.Length <= max)
            .WithMessage(r => $"'content' may be at most {max} characters (was {r.Content!.Length}).").WithErrorCode(BuildingBlocks.Validation.Limits.ErrorCode);
        RuleFor(r => r.Provider).Must(p => p is null || !string.IsNullOrWhiteSpace(p)).WithMessage("'provider' must not be blank when given.");
        RuleFor(r => r.Model).Must(m => m is null || (!string.IsNullOrWhiteSpace(m) && m.Length <= 200)).WithMessage("'model' must be a model name of at most 200 characters.");
        RuleFor(r => r.Model).Must(ProviderSettings.HasNoControlCharacters).WithMessage("'model' must not contain control characters (line breaks, tabs, ...).");
        RuleFor(r => r.ToolServers).Must(s => s is null || s.All(n => !string.IsNullOrWhiteSpace(n))).WithMessage("'toolServers' must hold server names.");
        // A tenant has at most that many servers, so more names could never all be known.
        var servers = mcp.Value.MaxServersPerTenant;
        RuleFor(r => r.ToolServers).Must(s => s is null || s.Count <= servers)
            .WithMessage($"'toolServers' may name at most {servers} servers (Mcp:MaxServersPerTenant).").WithErrorCode(BuildingBlocks.Validation.Limits.ErrorCode);
    }
}

/// <summary>
/// Runs chat turns: appends the user's message, assembles the context, calls the model with the tenant's MCP tools
/// (function invocation up to <see cref="ChatTurnOptions.MaxToolRounds"/> rounds and <see cref="ChatTurnOptions.MaxToolCalls"/>
/// calls), then appends the tool calls, their
/// results and the answer in one transaction. A failed model call, or a turn past <see cref="ChatTurnOptions.TurnTimeout"/>, appends
/// nothing more than the user's message.
/// Conversations are read and written through <see cref="IConversationMessages"/> only.
/// </summary>
internal sealed partial class ChatTurns(
    IConversationMessages conversations,
    ProviderDirectory providers,
    ModelClients clients,
    ChatContextAssembler contexts,
    McpConnector connector,
    IDocumentStore store,
    IValidator<ChatRequest> validator,
    IOptionsMonitor<ChatTurnOptions> chatOptions,
    IOptionsMonitor<McpOptions> mcpOptions,
    ProvidersMetrics metrics,
    TimeProvider clock,
    ChatShutdown shutdown,
    ILogger<ChatTurns> logger)
{
    private ProvidersMetrics Metrics => metrics;

    private ChatShutdown Shutdown => shutdown;

    private ILogger Logger => logger;

    private IOptionsMonitor<ChatTurnOptions> ChatOptions => chatOptions;

    private IConversationMessages Conversations => conversations;

    private TimeProvider Clock => clock;

    /// <summary>Everything before the model call. Errors here are the caller's (400, 404, 409, 422).</summary>
    public async Task<ChatTurn> BeginAsync(string tenantId, Guid conversationId, ChatRequest request, bool streamed, CancellationToken cancellationToken)
    {
        await validator.ValidateAndThrowAsync(request, cancellationToken);
        // The conversation first: a client that names one that does not exist hears that, not how to add a provider.
        _ = await conversations.FindAsync(tenantId, conversationId, cancellationToken) ?? throw new NotFoundException("Conversation", conversationId);
        var provider = await providers.FindAsync(tenantId, request.Provider, cancellationToken);
        if (provider is null)
        {
            var all = await providers.GetAllAsync(tenantId, cancellationToken);
            if (request.Provider is not null && all.Count > 0)
            {
                throw new BadRequestException("provider", $"'provider' names no provider of this tenant (was '{request.Provider}'): GET /api/providers lists them.");
            }

            if (all.Count > 0)
            {
                // Several providers, each stored with isDefault false: there are providers, just none to pick by itself.
                throw new ConflictException(
                    $"This tenant has {all.Count} providers but none is the default: name one with 'provider' " +
                    "(GET /api/providers lists them) or make one the default with PUT /api/providers/{id} and \"isDefault\": true.",
                    new Dictionary<string, object?> { ["providers"] = all.Count });
            }

            throw new ConflictException(
                "No LLM provider is configured for this tenant, so there is nobody to answer. Add one with POST /api/providers, e.g. " +
                "{\"name\":\"openai\",\"kind\":\"openai-compatible\",\"endpoint\":\"https://api.openai.com/v1\",\"chatModel\":\"gpt-4o-mini\",\"apiKey\":\"sk-...\"} " +
                "(or an Ollama, vLLM, LM Studio or Azure OpenAI endpoint). Conversations, summaries and search keep working without one.",
                new Dictionary<string, object?> { ["addProvider"] = "POST /api/providers" });
        }

        var model = request.Model?.Trim() ?? provider.ChatModel;
        var modelClient = clients.Chat(provider, model); // throws 409 now if the stored key cannot be decrypted
        var servers = await ToolServersAsync(tenantId, request.ToolServers, cancellationToken);

        var user = (await conversations.AppendAsync(tenantId, conversationId,
            [new NewConversationMessage(MessageRole.User, request.Content!, request.ExternalId)], cancellationToken: cancellationToken))[0];
        if (user.Duplicate && await conversations.FindByExternalIdAsync(tenantId, conversationId, ChatTurn.AnswerId(user), cancellationToken) is { } answered)
        {
            // A retry of a turn that was answered (the client lost the answer): the stored turn, without asking the model
            // again (a paid call, tool calls with their effects, and an answer other than the stored one).
            var noTools = await McpToolSession.OpenAsync([], connector, store, metrics, mcpOptions.CurrentValue,
                chatOptions.CurrentValue.MaxToolResultLength, clock, logger, cancellationToken);
            return new ChatTurn(this, tenantId, conversationId, provider, model, modelClient, user, new ChatContext([], null, 0, 0), noTools, streamed,
                ChatTurn.Replayed(conversationId, user, answered));
        }

        if (user.Duplicate && await conversations.FindDeletedSequenceAsync(tenantId, conversationId, ChatTurn.AnswerId(user), cancellationToken) is { } deleted)
        {
            // A retry of a turn that was answered, after retention deleted the answer: nothing to replay, and asking the
            // model again would answer whatever the context now ends with.
            throw new ConflictException(
                $"The turn of message {user.Sequence} (externalId '{request.ExternalId}') was answered (message {deleted}), but retention has " +
                "since deleted the answer with the messages a summary covers, so it cannot be replayed. Ask again as a new turn (another externalId).",
                new Dictionary<string, object?> { ["messageSequence"] = user.Sequence, ["answerSequence"] = deleted });
        }

        if (user.Duplicate && (await conversations.FindAsync(tenantId, conversationId, cancellationToken))?.MessageCount is { } latest && latest > user.Sequence)
        {
            // A retry of a turn that was not answered (the model failed), after the conversation went on: its answer would be
            // stored after the later messages (and their answers), where it reads as an answer to them.
            throw new ConflictException(
                $"The turn of message {user.Sequence} (externalId '{request.ExternalId}') was not answered, and the conversation went on since " +
                $"(message {latest}): its answer would come after the later messages. Ask again as a new turn (another externalId).",
                new Dictionary<string, object?> { ["messageSequence"] = user.Sequence, ["latestSequence"] = latest });
        }

        // Up to the turn's own message: another turn of the conversation running at once may have appended its message since.
        var context = await contexts.AssembleAsync(tenantId, conversationId, model, cancellationToken, user.Sequence);
        var tools = await McpToolSession.OpenAsync(servers, connector, store, metrics, mcpOptions.CurrentValue,
            chatOptions.CurrentValue.MaxToolResultLength, clock, logger, cancellationToken);
        return new ChatTurn(this, tenantId, conversationId, provider, model, modelClient, user, context, tools, streamed);
    }

    private async Task<IReadOnlyList<McpServerConnection>> ToolServersAsync(string tenantId, List<string>? names, CancellationToken cancellationToken)
    {
        if (names is { Count: 0 })
        {
            return [];
        }

        await using var session = store.QuerySession(tenantId);
        var all = await session.Query<McpServerConnection>().OrderBy(s => s.CreatedAt).ToListAsync(cancellationToken);
        if (names is null)
        {
            return all;
        }

        // Each name normalized once (the stored one too: documents of older versions hold an older NormalizedName).
        var asked = names.Select(n => (Sent: n.Trim(), Name: ProviderSettings.Normalize(n))).ToList();
        var known = all.Select(s => ProviderSettings.Normalize(s.Name)).ToList();
        var unknown = asked.Where(a => !known.Contains(a.Name)).Select(a => a.Sent).Distinct(StringComparer.Ordinal).ToList();
        var wanted = asked.Select(a => a.Name).ToHashSet(StringComparer.Ordinal);
        return unknown.Count > 0
            ? throw new BadRequestException("toolServers", $"'toolServers' names MCP servers this tenant does not have: {string.Join(", ", unknown)}.")
            : all.Where((_, i) => wanted.Contains(known[i])).ToList();
    }

    /// <summary>One turn in flight. Dispose it to close its MCP connections.</summary>
    internal sealed class ChatTurn(
        ChatTurns owner, string tenantId, Guid conversationId, ResolvedProvider provider, string model, IChatClient modelClient,
        AppendedConversationMessage user, ChatContext context, McpToolSession tools, bool streamed, ChatTurnResponse? replay = null)
        : IAsyncDisposable
    {
        private readonly long _started = Stopwatch.GetTimestamp();
        private readonly Activity? _activity = StartActivity(provider, model, streamed);
        private readonly ToolCallLimit _limit = new(owner.ChatOptions.CurrentValue.MaxToolCalls, owner.ChatOptions.CurrentValue.MaxToolRounds);
        private readonly TimeSpan _timeout = owner.ChatOptions.CurrentValue.TurnTimeout;

        /// <summary>The external id of the answer to <paramref name="user"/>'s message.</summary>
        public static string AnswerId(AppendedConversationMessage user) => $"chat:{user.MessageId:N}:answer";

        /// <summary>
        /// The stored turn, as a retry of it answers: the user's message and the stored answer, with the provider, model and
        /// usage the answer recorded; its tool calls are not repeated (they are in the conversation) and the context is not
        /// assembled again (0).
        /// </summary>
        public static ChatTurnResponse Replayed(Guid conversationId, AppendedConversationMessage user, ConversationMessage answer)
        {
            string? Meta(string key) => answer.Metadata?.GetValueOrDefault(key);
            long? Number(string key) => long.TryParse(Meta(key), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : null;
            return new ChatTurnResponse(conversationId, new ChatMessageRef(user.MessageId, user.Sequence),
                new ChatAnswer(answer.MessageId, answer.Sequence, answer.Content), [], Meta("provider") ?? "", Meta("model") ?? "",
                new ChatUsage(Number("inputTokens"), Number("outputTokens"), Number("totalTokens")),
                new ChatContextInfo(0, 0, null), Number("durationMs") ?? 0)
            {
                Replayed = true,
            };
        }

        public async Task<ChatTurnResponse> RunAsync(CancellationToken cancellationToken)
        {
            if (replay is not null)
            {
                return replay;
            }

            using var deadline = Deadline(cancellationToken);
            var response = await UnderDeadlineAsync(
                async () => await Pipeline().GetResponseAsync(context.Messages, Options(), deadline.Token), deadline, cancellationToken);
            return await CompleteAsync(response.Messages, response.Usage, cancellationToken);
        }

        /// <summary>The model's updates as they come; call <see cref="CompleteAsync"/> with them when the stream ends.</summary>
        public async IAsyncEnumerable<ChatResponseUpdate> StreamAsync([EnumeratorCancellation] CancellationToken cancellationToken)
        {
            if (replay is not null)
            {
                yield break; // nothing streams: the stored turn is the "done" event
            }

            using var deadline = Deadline(cancellationToken);
            var updates = Pipeline().GetStreamingResponseAsync(context.Messages, Options(), deadline.Token).GetAsyncEnumerator(deadline.Token);
            var any = false;
            var finished = false; // whether the model's latest round ended with a finish reason
            try
            {
                while (true)
                {
                    if (!await UnderDeadlineAsync(updates.MoveNextAsync, deadline, cancellationToken))
                    {
                        if (!any)
                        {
                            // Not even a role or a finish reason: what answered is no chat-completions stream (a gateway's
                            // error page, a JSON error with status 200). As in the plain call, that is the provider failing.
                            throw Failed(new ModelCallException(StatusCodes.Status502BadGateway, "The model provider sent no answer.",
                                $"Provider '{provider.Name}' (model '{model}') ended its stream without sending anything: check that the endpoint is an OpenAI-compatible API.",
                                null));
                        }

                        if (!finished)
                        {
                            // Some of the answer came, then the connection closed without a finish reason (nor [DONE]): the
                            // model did not finish, and what came is no answer, as the same answer cut short unstreamed is not.
                            throw Failed(new ModelCallException(StatusCodes.Status502BadGateway, "The model provider failed while answering.",
                                $"Provider '{provider.Name}' (model '{model}') ended its stream before the model finished (no finish reason came): " +
                                "the answer is incomplete.",
                                null));
                        }

                        yield break;
                    }

                    any = true;
                    var update = updates.Current;
                    if (update.FinishReason is not null)
                    {
                        finished = true;
                    }
                    else if (update.Contents.Any(c => c is FunctionResultContent))
                    {
                        finished = false; // the tools answered: the model's next round must finish in its turn
                    }

                    yield return update;
                }
            }
            finally
            {
                await updates.DisposeAsync();
            }
        }

        /// <summary>Appends the tool calls, their results and the answer in one transaction, and describes the turn.</summary>
        public async Task<ChatTurnResponse> CompleteAsync(IList<ChatMessage> produced, UsageDetails? usage, CancellationToken cancellationToken)
        {
            if (replay is not null)
            {
                return replay;
            }

            var settings = owner.ChatOptions.CurrentValue;
            var prefix = $"chat:{user.MessageId:N}";
            var toStore = new List<NewConversationMessage>();
            var calls = new List<(FunctionCallContent Call, int CallIndex)>();
            // Per call, its result and where it is stored. A result answers the latest unanswered call with its id: some
            // providers number calls per round, so one id can come back in a later round of the same turn.
            var results = new List<(FunctionResultContent? Result, int Index)>();
            var answerParts = new List<string>();
            var callNumber = 0;
            var notRun = 0;
            var unanswered = Unanswered(produced);
            var resultNumber = 0; // results count on their own: two calls of one round must not share an external id (the second would be a duplicate)
            foreach (var message in produced)
            {
                foreach (var content in message.Contents)
                {
                    switch (content)
                    {
                        case FunctionCallContent call when _limit.Refused(call) || unanswered.Contains(call):
                            // Beyond the turn's limit: not run, and not stored (nor its result); the answer counts them. So is a
                            // call the model asked in the last round, which offers no tools (Chat:MaxToolRounds used up): it was
                            // never run, and stored without a result it would be a call cut in half (never replayed, never answered).
                            calls.Add((call, NotStored));
                            results.Add((null, -1));
                            notRun++;
                            break;
                        case FunctionCallContent call:
                            var origin = tools.Origins.GetValueOrDefault(call.Name) ?? new ToolOrigin("", call.Name);
                            calls.Add((call, toStore.Count));
                            results.Add((null, -1));
                            var callMetadata = new Dictionary<string, string>
                            {
                                ["kind"] = "tool_call", ["callId"] = Cut(call.CallId, 200), ["server"] = origin.Server, ["tool"] = origin.Tool,
                                ["function"] = Cut(call.Name, 200), // the name the model saw, for replaying the call in later turns
                            };
                            var callText = JsonSerializer.Serialize(new { tool = origin.Tool, server = origin.Server, arguments = call.Arguments });
                            if (callText.Length > settings.MaxStoredToolResultLength)
                            {
                                // Arguments cut in the middle would not be JSON: the call is stored without them, marked, and
                                // never replayed to the model (ToolCallReplay), rather than refusing the turn it belongs to.
                                callMetadata[ToolCallReplay.TruncatedKey] = "true";
                                callMetadata["argumentsLength"] = callText.Length.ToString(CultureInfo.InvariantCulture);
                                callText = JsonSerializer.Serialize(new { tool = origin.Tool, server = origin.Server, arguments = (object?)null });
                            }

                            toStore.Add(new NewConversationMessage(MessageRole.Tool, callText, $"{prefix}:call:{++callNumber}", callMetadata));
                            break;
                        case FunctionResultContent result:
                            var fullResult = ResultText(result);
                            var resultText = Cut(fullResult, settings.MaxStoredToolResultLength);
                            var answered = LatestUnanswered(calls, results, result.CallId);
                            if (answered >= 0 && calls[answered].CallIndex == NotStored)
                            {
                                results[answered] = (result, NotStored);
                                break;
                            }

                            var called = answered >= 0 ? calls[answered].Call : null;
                            var from = called is null ? new ToolOrigin("", "") : tools.Origins.GetValueOrDefault(called.Name) ?? new ToolOrigin("", called.Name);
                            if (answered >= 0)
                            {
                                results[answered] = (result, toStore.Count);
                            }

                            var resultMetadata = new Dictionary<string, string>
                            {
                                ["kind"] = "tool_result", ["callId"] = Cut(result.CallId, 200), ["server"] = from.Server, ["tool"] = from.Tool,
                                ["failed"] = (result.Exception is not null || called is not null && tools.Failed(called)).ToString().ToLowerInvariant(),
                            };
                            if (resultText.Length < fullResult.Length)
                            {
                                // Stored cut (the model was given it whole, up to Chat:MaxToolResultLength): marked, as a cut answer is.
                                resultMetadata["truncated"] = "true";
                                resultMetadata["resultLength"] = fullResult.Length.ToString(CultureInfo.InvariantCulture);
                            }

                            toStore.Add(new NewConversationMessage(MessageRole.Tool, StoredText(resultText, "(empty result)"),
                                $"{prefix}:result:{++resultNumber}", resultMetadata));
                            break;
                    }
                }

                if (message.Role == ChatRole.Assistant && StorableText.WithoutNul(message.Text) is var said && !string.IsNullOrWhiteSpace(said))
                {
                    answerParts.Add(said);
                }
            }

            // Every round's text, as it streamed: what a model writes before its tool calls ("Let me look that up.") is part of
            // the answer, not lost (it used to be streamed as deltas and left out of the answer, which kept the last round's).
            var answer = answerParts.Count > 0 ? AnswerRounds.Join(answerParts) : "(the model returned no text)";
            var duration = Stopwatch.GetElapsedTime(_started);
            var metadata = new Dictionary<string, string>
            {
                ["kind"] = "answer",
                ["provider"] = provider.Name,
                ["model"] = model,
                ["durationMs"] = duration.TotalMilliseconds.ToString("0", CultureInfo.InvariantCulture),
                ["replyTo"] = user.Sequence.ToString(CultureInfo.InvariantCulture),
            };
            if (answer.Length > settings.MaxContentLength)
            {
                // Longer than a message may be: stored cut, and marked, rather than refusing the turn (the client asked
                // nothing wrong) and losing an answer that was paid for.
                metadata["truncated"] = "true";
                metadata["answerLength"] = answer.Length.ToString(CultureInfo.InvariantCulture);
                answer = StorableText.Prefix(answer, settings.MaxContentLength);
            }

            if (notRun > 0)
            {
                metadata["toolCallsNotRun"] = notRun.ToString(CultureInfo.InvariantCulture);
            }

            if (usage?.InputTokenCount is { } input)
            {
                metadata["inputTokens"] = input.ToString(CultureInfo.InvariantCulture);
            }

            if (usage?.OutputTokenCount is { } output)
            {
                metadata["outputTokens"] = output.ToString(CultureInfo.InvariantCulture);
            }

            if (usage?.TotalTokenCount is { } total)
            {
                metadata["totalTokens"] = total.ToString(CultureInfo.InvariantCulture);
            }

            toStore.Add(new NewConversationMessage(MessageRole.Assistant, answer, $"{prefix}:answer", metadata));

            // The turn's outcome is stored even if the client left while it was being written. What the model and the
            // tool servers wrote is stored without NUL characters, which PostgreSQL cannot store (a client's own text
            // with one is refused with a 400 instead).
            var storable = toStore.Select(Storable).ToList();
            // Another run of the same turn may have stored its own answer first under the same ids: that one is the turn's.
            var stored = await owner.Conversations.AppendAsync(tenantId, conversationId, storable, firstStoredWins: true, CancellationToken.None);
            var answerStored = stored[^1];
            if (answerStored.Duplicate)
            {
                // The same turn ran twice at once (a retry sent before the first answer was stored): the run stored first is
                // the turn's, nothing of this one was stored, and this one answers with the first's answer rather than with
                // text that was never stored.
                var first = await owner.Conversations.FindByExternalIdAsync(tenantId, conversationId, AnswerId(user), CancellationToken.None)
                    ?? throw new ConflictException(
                        $"Another run of the turn of message {user.Sequence} was stored first, and retention has since deleted its answer, so it " +
                        "cannot be replayed. Ask again as a new turn (another externalId).",
                        new Dictionary<string, object?> { ["messageSequence"] = user.Sequence });
                owner.Metrics.ChatTurn("ok", streamed);
                return Replayed(conversationId, user, first);
            }

            var toolCalls = calls.Select((c, i) => (Call: c, Index: i)).Where(c => c.Call.CallIndex != NotStored).Select(entry =>
            {
                var (c, i) = entry;
                var result = results[i];
                var origin = tools.Origins.GetValueOrDefault(c.Call.Name) ?? new ToolOrigin("", c.Call.Name);
                return new ChatToolCall(c.Call.CallId, origin.Server, origin.Tool, JsonSerializer.Serialize(c.Call.Arguments),
                    result.Result is null ? "" : storable[result.Index].Content, // as stored
                    result.Result?.Exception is not null || tools.Failed(c.Call),
                    stored[c.CallIndex].Sequence, result.Result is null ? 0 : stored[result.Index].Sequence);
            }).ToList();

            owner.Metrics.ChatTurn("ok", streamed);
            _activity?.SetTag("modularchat.chat.tool_calls", toolCalls.Count);
            return new ChatTurnResponse(conversationId, new ChatMessageRef(user.MessageId, user.Sequence),
                new ChatAnswer(answerStored.MessageId, answerStored.Sequence, storable[^1].Content), toolCalls, provider.Name, model,
                new ChatUsage(usage?.InputTokenCount, usage?.OutputTokenCount, usage?.TotalTokenCount),
                new ChatContextInfo(context.MessageCount, context.Tokens, context.SummaryThroughSequence), duration.TotalMilliseconds);
        }

        /// <summary>Where <see cref="CompleteAsync"/> keeps a call beyond the turn's limit, which is not stored.</summary>
        private const int NotStored = -1;

        public IReadOnlyDictionary<string, ToolOrigin> ToolOrigins => tools.Origins;

        /// <summary>Whether the latest call with <paramref name="callId"/> failed (an error the tool reported, no answer in time, or not run: over the turn's limit).</summary>
        public bool ToolFailed(string callId) => tools.LatestFailed(callId) || _limit.LatestRefused(callId);

        /// <summary>
        /// Why <paramref name="call"/> is not run, in the words its result gives the model, or null when it is run (as far as
        /// is known when the call arrives: it is counted then). A call of the turn's last round (Chat:MaxToolRounds used up)
        /// or beyond the turn's limit is not stored either (the last round's gets no result at all); one of a tool that was
        /// not offered, or with arguments that are not JSON, is stored as a failed call with that result.
        /// </summary>
        public string? NotRun(FunctionCallContent call)
            => _limit.InLastRound(call) ? _limit.LastRoundReason
                : _limit.Refused(call) ? _limit.Refusal
                : !tools.Origins.ContainsKey(call.Name) ? McpToolSession.NotOfferedSentence(call)
                : call.Exception is not null ? McpToolSession.ArgumentsNotJsonSentence(call)
                : null;

        /// <summary>Whether <paramref name="call"/> is stored: not when it is of the last round or beyond the turn's limit.</summary>
        public bool Stored(FunctionCallContent call) => !_limit.InLastRound(call) && !_limit.Refused(call);

        private IChatClient Pipeline() => new ChatClientBuilder(modelClient)
            .Use(inner => new TurnFunctionInvocation(inner, tools, _limit)
            {
                MaximumIterationsPerRequest = _limit.MaxRounds,
                IncludeDetailedErrors = false, // exception messages could carry connection details into the model's context
                AllowConcurrentInvocation = false,
            })
            .Use(inner => new ToolCallCounting(inner, _limit))
            .Build();

        private Microsoft.Extensions.AI.ChatOptions Options() => new()
        {
            ModelId = model,
            Tools = tools.Tools.Count > 0 ? [.. tools.Tools] : null,
        };

        /// <summary>The turn's deadline, <see cref="ChatTurnOptions.TurnTimeout"/> from now on the host's clock.</summary>
        private ClockDeadline Deadline(CancellationToken cancellationToken) => new(_timeout, owner.Clock, cancellationToken);

        /// <summary>
        /// One step of the model pipeline (the whole answer, or a stream's next update) under the turn's
        /// <paramref name="deadline"/>, its failures made the turn's, in this order: past the deadline, a 504 naming it; a
        /// failure of the model call, as the provider's; the turn cancelled (logged, answered as JSON or streamed: the client
        /// left mid-turn). Both ways of answering take every step through here, so the rules are said once.
        /// </summary>
        private async ValueTask<T> UnderDeadlineAsync<T>(Func<ValueTask<T>> step, ClockDeadline deadline, CancellationToken cancellationToken)
        {
            try
            {
                return await step();
            }
            catch (Exception) when (TimedOut(deadline) is { } late)
            {
                throw late;
            }
            catch (Exception e) when (ModelCallException.From(e, provider, model, cancellationToken) is { } failure)
            {
                throw Failed(failure);
            }
            catch (Exception e) when (e is OperationCanceledException || cancellationToken.IsCancellationRequested)
            {
                owner.Metrics.ChatTurn("cancelled", streamed);
                if (owner.Shutdown.HasStopped)
                {
                    // The client is answered 503 (ChatEndpoint, ChatShutdown.Stopped): it did not leave.
                    LogStoppedWithNode(owner.Logger, conversationId);
                }
                else
                {
                    LogCancelled(owner.Logger, conversationId);
                }

                throw Cancelled(e, cancellationToken);
            }
        }

        /// <summary>
        /// The failure of a turn whose <paramref name="deadline"/> passed while its caller still waits (the model or tool
        /// call in flight cancelled by it): a 504 as a model call that timed out, naming the setting; null otherwise. As
        /// any model call that fails mid-turn, it stores nothing but the user's message. Logged as a turn out of time, with
        /// the call it was waiting for (a hanging tool is no failure of the provider), not as the provider's failure.
        /// </summary>
        private ModelCallException? TimedOut(ClockDeadline deadline)
        {
            if (!deadline.Passed)
            {
                return null;
            }

            string waitedFor;
            if (tools.InFlight is { } call)
            {
                waitedFor = $"the call to tool '{call.Tool}' of MCP server '{call.Server}'";
                LogTimedOutInToolCall(owner.Logger, conversationId, deadline.Timeout, call.Tool, call.Server, call.ServerId);
            }
            else
            {
                waitedFor = $"the call to provider '{provider.Name}' (model '{model}')";
                LogTimedOutInModelCall(owner.Logger, conversationId, deadline.Timeout, provider.Name, model);
            }

            return Counted(new ModelCallException(StatusCodes.Status504GatewayTimeout, "The chat turn did not finish in time.",
                $"The turn did not finish within {deadline.Timeout.TotalSeconds:0.#} s (Chat:TurnTimeout): {waitedFor}, still running " +
                "then, was cancelled, and nothing but the user's message is stored.",
                null));
        }

        private ModelCallException Failed(ModelCallException failure)
        {
            LogFailed(owner.Logger, conversationId, provider.Name, model, failure.Status, failure.Message);
            return Counted(failure);
        }

        /// <summary>Counts the failed turn (by its status) and marks its activity failed.</summary>
        private ModelCallException Counted(ModelCallException failure)
        {
            owner.Metrics.ChatTurn(failure.Status == 504 ? "timeout" : "provider_error", streamed);
            _activity?.SetStatus(ActivityStatusCode.Error, failure.ProviderStatus?.ToString(CultureInfo.InvariantCulture) ?? failure.Title);
            return failure;
        }

        /// <summary>
        /// The turn's cancellation (its client left, the node stops) as an <see cref="OperationCanceledException"/>, which
        /// the endpoint answers (503 when the node stops), also when the client's retries wrapped it with an earlier try's
        /// error in an <see cref="AggregateException"/>.
        /// </summary>
        private static OperationCanceledException Cancelled(Exception error, CancellationToken cancellationToken)
            => error as OperationCanceledException ?? new OperationCanceledException("The chat turn was cancelled.", error, cancellationToken);

        /// <summary>The calls among <paramref name="produced"/> that no result answers (paired as <see cref="CompleteAsync"/> pairs them).</summary>
        private static HashSet<FunctionCallContent> Unanswered(IList<ChatMessage> produced)
        {
            var open = new List<FunctionCallContent>();
            foreach (var content in produced.SelectMany(m => m.Contents))
            {
                if (content is FunctionCallContent call)
                {
                    open.Add(call);
                }
                else if (content is FunctionResultContent result && open.FindLastIndex(c => string.Equals(c.CallId, result.CallId, StringComparison.Ordinal)) is var i and >= 0)
                {
                    open.RemoveAt(i);
                }
            }

            return new HashSet<FunctionCallContent>(open, ReferenceEqualityComparer.Instance);
        }

        private static int LatestUnanswered(
            List<(FunctionCallContent Call, int CallIndex)> calls, List<(FunctionResultContent? Result, int Index)> results, string callId)
        {
            for (var i = calls.Count - 1; i >= 0; i--)
            {
                if (results[i].Result is null && string.Equals(calls[i].Call.CallId, callId, StringComparison.Ordinal))
                {
                    return i;
                }
            }

            return -1;
        }

        private static string ResultText(FunctionResultContent result) => result.Result switch
        {
            null => result.Exception is not null ? "The tool call failed." : "",
            string s => s,
            JsonElement { ValueKind: JsonValueKind.String } s => s.GetString() ?? "",
            var other => JsonSerializer.Serialize(other),
        };

        private static string Cut(string text, int max) => StorableText.Prefix(text, max);

        /// <summary>
        /// <paramref name="text"/> as a message can hold it: without NUL characters, and <paramref name="placeholder"/> when
        /// nothing but white space is left (a tool answering " ", or only NULs), since a message must have content and a
        /// refused message would refuse the whole turn, answer included.
        /// </summary>
        private static string StoredText(string text, string placeholder)
        {
            var storable = StorableText.WithoutNul(text);
            return string.IsNullOrWhiteSpace(storable) ? placeholder : storable;
        }

        private static NewConversationMessage Storable(NewConversationMessage message) => message with
        {
            Content = StorableText.WithoutNul(message.Content),
            Metadata = message.Metadata?.ToDictionary(m => StorableText.WithoutNul(m.Key), m => StorableText.WithoutNul(m.Value), StringComparer.Ordinal),
        };

        private static Activity? StartActivity(ResolvedProvider provider, string model, bool streamed)
        {
            var activity = ModularChatTelemetry.ActivitySource.StartActivity("chat turn");
            activity?.SetTag("modularchat.provider", ModelClients.Label(provider));
            activity?.SetTag("gen_ai.request.model", model);
            activity?.SetTag("modularchat.chat.streamed", streamed);
            return activity;
        }

        public async ValueTask DisposeAsync()
        {
            await tools.DisposeAsync();
            _activity?.Dispose();
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Chat turn in conversation {ConversationId} failed at provider {Provider} (model {Model}): {Status} {Reason}")]
    private static partial void LogFailed(ILogger logger, Guid conversationId, string provider, string model, int status, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Chat turn in conversation {ConversationId} ran past Chat:TurnTimeout ({TurnTimeout}) " +
        "while it waited for the model call (provider {Provider}, model {Model}): that call was cancelled")]
    private static partial void LogTimedOutInModelCall(ILogger logger, Guid conversationId, TimeSpan turnTimeout, string provider, string model);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Chat turn in conversation {ConversationId} ran past Chat:TurnTimeout ({TurnTimeout}) " +
        "while it waited for tool {Tool} of MCP server {Server} ({ServerId}): that call was cancelled")]
    private static partial void LogTimedOutInToolCall(ILogger logger, Guid conversationId, TimeSpan turnTimeout, string tool, string server, Guid serverId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Chat turn in conversation {ConversationId} cancelled: the client went away")]
    private static partial void LogCancelled(ILogger logger, Guid conversationId);

    [LoggerMessage(Level = LogLevel.Information,
        Message = "Chat turn in conversation {ConversationId} stopped: the node is stopping and Chat:ShutdownGrace has passed (answered 503; its user message is kept)")]
    private static partial void LogStoppedWithNode(ILogger logger, Guid conversationId);
}
