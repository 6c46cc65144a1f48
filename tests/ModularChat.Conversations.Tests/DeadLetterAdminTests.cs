using System.Diagnostics.Metrics;
using System.Net;
using Alba;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Conversations.Contracts;
using ModularChat.Conversations.Features.Retention;
using Npgsql;
using Wolverine;
using Wolverine.Runtime;

namespace ModularChat.Conversations.Tests;

/// <summary>
/// The operators' view of the dead-letter store (<c>/api/admin/dead-letters</c>): every tenant's letters listed, filtered
/// and paged, replayed by id or by filter (back to their queue, where they are handled), and discarded by id. The letters
/// are put into the store through Wolverine's own inbox, as its failure rules do.
/// </summary>
[Collection(AppCollection.Name)]
public sealed class DeadLetterAdminTests(ConversationsApp app)
{
    private const string Path = "/api/admin/dead-letters";
    private static readonly string RetentionType = typeof(ApplyRetention).FullName!;
    private static readonly string DeletedType = typeof(ConversationDeleted).FullName!;

    [Fact]
    public async Task Operators_list_every_tenants_letters_oldest_first_by_tenant_message_type_and_in_pages()
    {
        var tenant = ModularChatApp.NewUser("dead");
        var longer = tenant + "-other"; // its envelopes contain the first tenant's id too
        var first = await StageAsync(new ApplyRetention(Guid.NewGuid()), tenant, "the first");
        var second = await StageAsync(new ConversationDeleted(Guid.NewGuid(), DateTimeOffset.UtcNow), tenant, "the second");
        var third = await StageAsync(new ApplyRetention(Guid.NewGuid()), tenant, "the third");
        var others = await StageAsync(new ApplyRetention(Guid.NewGuid()), longer, "another tenant's");
        using var client = Operator();

        var all = await PageAsync(client, $"?tenant={tenant}");
        Assert.Equal([first, second, third], all.Items.Select(l => l.Id));
        Assert.Null(all.NextCursor);
        var letter = all.Items[0];
        Assert.Equal(tenant, letter.TenantId);
        Assert.Equal(RetentionType, letter.MessageType);
        Assert.StartsWith("local://", letter.Queue, StringComparison.Ordinal);
        Assert.Equal(typeof(StagedFailure).FullName, letter.ExceptionType);
        Assert.Equal("the first (staged by a test)", letter.ExceptionMessage);
        Assert.Equal(3, letter.Attempts);
        Assert.False(letter.Replayable);
        Assert.NotNull(letter.FailedAt);
        Assert.Equal([second], (await PageAsync(client, $"?tenant={tenant}&messageType={DeletedType}")).Items.Select(l => l.Id));
        Assert.Equal([others], (await PageAsync(client, $"?tenant={longer}")).Items.Select(l => l.Id));
        Assert.Contains((await PageAsync(client, $"?exceptionType={typeof(StagedFailure).FullName}&limit=500")).Items, l => l.Id == others);

        // Pages of two: the cursor goes on after the last letter, and belongs to its filters.
        var page = await PageAsync(client, $"?tenant={tenant}&limit=2");
        Assert.Equal([first, second], page.Items.Select(l => l.Id));
        Assert.NotNull(page.NextCursor);
        var rest = await PageAsync(client, $"?tenant={tenant}&limit=2&cursor={page.NextCursor}");
        Assert.Equal([third], rest.Items.Select(l => l.Id));
        Assert.Null(rest.NextCursor);
        await AssertBadRequestAsync(await client.GetAsync($"{Path}?tenant={longer}&limit=2&cursor={page.NextCursor}"), "cursor", "issued for another list");
    }

    [Fact]
    public async Task A_replay_by_ids_or_by_filters_sends_the_letters_back_to_their_queue_where_they_are_handled()
    {
        var tenant = ModularChatApp.NewUser("dead");
        var byId = await StageAsync(new ApplyRetention(Guid.NewGuid()), tenant, "replayed by id");
        var byFilter = await StageAsync(new ApplyRetention(Guid.NewGuid()), tenant, "replayed by filter");
        var kept = await StageAsync(new ConversationDeleted(Guid.NewGuid(), DateTimeOffset.UtcNow), tenant, "left alone");
        using var client = Operator();

        // An empty list replays none (Wolverine would take no ids for every letter).
        Assert.Equal(0, (await (await client.PostJson($"{Path}/replay", new { ids = Array.Empty<Guid>() })).ReadAs<ReplayedDto>(HttpStatusCode.Accepted)).Replayed);
        Assert.Equal(3, (await PageAsync(client, $"?tenant={tenant}")).Items.Count(l => !l.Replayable));

        var replayed = await (await client.PostJson($"{Path}/replay", new { ids = new[] { byId, Guid.NewGuid() } })).ReadAs<ReplayedDto>(HttpStatusCode.Accepted);
        Assert.Equal(1, replayed.Replayed); // the letter that exists
        await AssertHandledAsync(byId);

        replayed = await (await client.PostJson($"{Path}/replay", new { messageType = RetentionType, tenant })).ReadAs<ReplayedDto>(HttpStatusCode.Accepted);
        Assert.Equal(1, replayed.Replayed);
        await AssertHandledAsync(byFilter);
        Assert.Equal([kept], (await PageAsync(client, $"?tenant={tenant}")).Items.Where(l => !l.Replayable).Select(l => l.Id));
    }

    [Fact]
    public async Task A_discard_deletes_the_letters_it_names_and_no_other()
    {
        var tenant = ModularChatApp.NewUser("dead");
        var discarded = await StageAsync(new ApplyRetention(Guid.NewGuid()), tenant, "discarded");
        var kept = await StageAsync(new ApplyRetention(Guid.NewGuid()), tenant, "kept");
        using var client = Operator();

        var answer = await (await client.PostJson($"{Path}/discard", new { ids = new[] { discarded, discarded, Guid.NewGuid() } })).ReadAs<DiscardedDto>(HttpStatusCode.OK);

        Assert.Equal(1, answer.Discarded);
        Assert.Equal([kept], (await PageAsync(client, $"?tenant={tenant}")).Items.Select(l => l.Id));
    }

    [Fact]
    public async Task Bad_requests_answer_400_naming_the_parameter_and_the_endpoints_are_for_operators_only()
    {
        using var client = Operator();
        await AssertBadRequestAsync(await client.GetAsync($"{Path}?limit=0"), "limit", "between 1 and 500");
        await AssertBadRequestAsync(await client.GetAsync($"{Path}?limit=501"), "limit", "between 1 and 500");
        await AssertBadRequestAsync(await client.GetAsync($"{Path}?messageType="), "messageType", "must not be empty");
        await AssertBadRequestAsync(await client.GetAsync($"{Path}?tenant={new string('t', 1001)}"), "tenant", "at most 1000");
        await AssertBadRequestAsync(await client.GetAsync($"{Path}?cursor=nonsense"), "cursor", "not a valid cursor");
        await AssertBadRequestAsync(await client.PostJson($"{Path}/replay", new { ids = new[] { Guid.NewGuid() }, tenant = "acme" }), "ids", "not both");
        await AssertBadRequestAsync(await client.PostJson($"{Path}/replay", new { ids = Enumerable.Range(0, 501).Select(_ => Guid.NewGuid()) }), "ids", "at most 500");
        await AssertBadRequestAsync(await client.PostJson($"{Path}/discard", new { }), "ids", "at least one");
        await AssertBadRequestAsync(await client.PostJson($"{Path}/discard", new { ids = Array.Empty<Guid>() }), "ids", "at least one");

        using var user = app.Client(ModularChatApp.NewUser());
        using var tenantAdmin = app.Client(ModularChatApp.NewUser("admin"), roles: "admin"); // every tenant's letters: not one tenant's business
        foreach (var caller in new[] { user, tenantAdmin })
        {
            Assert.Equal(HttpStatusCode.Forbidden, (await caller.GetAsync(Path)).StatusCode);
            Assert.Equal(HttpStatusCode.Forbidden, (await caller.PostJson($"{Path}/replay", new { })).StatusCode);
            Assert.Equal(HttpStatusCode.Forbidden, (await caller.PostJson($"{Path}/discard", new { ids = new[] { Guid.NewGuid() } })).StatusCode);
        }

        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Host.Server.CreateClient().GetAsync(Path)).StatusCode);
    }

    [Fact]
    public async Task The_gauge_counts_the_letters_waiting_by_message_type_down_to_0_once_they_are_replayed_or_discarded()
    {
        // A node on a database of its own: the figures are its letters alone.
        var database = await app.EmptyDatabaseOfItsOwnAsync("dead_letter_gauge");
        await using var node = await app.StartHostAsync(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Postgres"] = database,
            ["Messaging:DeadLetterCountInterval"] = "00:00:00.200",
        });
        using var gauge = new MetricCollector<long>(node.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.DeadLetters);
        var tenant = ModularChatApp.NewUser("dead");
        var replayed = await StageAsync(new ApplyRetention(Guid.NewGuid()), tenant, "replayed", node);
        await StageAsync(new ApplyRetention(Guid.NewGuid()), tenant, "waiting", node);
        var discarded = await StageAsync(new ConversationDeleted(Guid.NewGuid(), DateTimeOffset.UtcNow), tenant, "discarded", node);

        await GaugeAsync(gauge, (RetentionType, 2), (DeletedType, 1));

        using var client = app.Client(node, ModularChatApp.NewUser("operator"), roles: "operator");
        (await client.PostJson($"{Path}/replay", new { ids = new[] { replayed } })).EnsureSuccessStatusCode();
        (await client.PostJson($"{Path}/discard", new { ids = new[] { discarded } })).EnsureSuccessStatusCode();
        await GaugeAsync(gauge, (RetentionType, 1), (DeletedType, 0));
    }

    /// <summary>Waits until the gauge's last reading is <paramref name="expected"/> (message type, count), those types alone.</summary>
    private static Task GaugeAsync(MetricCollector<long> gauge, params (string Type, long Count)[] expected)
    {
        var want = string.Join(", ", expected.OrderBy(e => e.Type, StringComparer.Ordinal).Select(e => $"{e.Type}={e.Count}"));
        return Eventually.Until(() =>
            {
                gauge.Clear();
                gauge.RecordObservableInstruments();
                return Task.FromResult(string.Join(", ", gauge.GetMeasurementSnapshot()
                    .Select(m => $"{m.Tags["message_type"]}={m.Value}").Order(StringComparer.Ordinal)));
            }, reading => reading == want, seconds: 30, what: $"the dead-letter gauge at {want}");
    }

    /// <summary>
    /// Puts <paramref name="message"/> of <paramref name="tenant"/> into the dead-letter store as Wolverine's failure rules do
    /// (its inbox's move, for the queue its handler listens on), after three attempts; answers the letter's id.
    /// </summary>
    private async Task<Guid> StageAsync(object message, string tenant, string failure, IAlbaHost? node = null)
    {
        var runtime = (node ?? app.Host).Services.GetRequiredService<IWolverineRuntime>();
        var envelope = runtime.RoutingFor(message.GetType()).RouteForPublish(message, new DeliveryOptions { TenantId = tenant })[0];
        envelope.Serializer ??= runtime.Options.DefaultSerializer;
        envelope.ContentType ??= envelope.Serializer.ContentType;
        envelope.Attempts = 3;
        await runtime.Storage.Inbox.MoveToDeadLetterStorageAsync(envelope, new StagedFailure(failure + " (staged by a test)"));
        return envelope.Id;
    }

    /// <summary>The replayed letter left the store, went back to its queue and was handled there.</summary>
    private async Task AssertHandledAsync(Guid id)
    {
        await using var connection = new NpgsqlConnection(app.PostgresConnectionString);
        await connection.OpenAsync();
        await Eventually.Until(async () =>
            {
                await using var command = new NpgsqlCommand(
                    "select (select count(*) from modularchat.wolverine_dead_letters where id = $1)::text || '/' || " +
                    "coalesce((select status from modularchat.wolverine_incoming_envelopes where id = $1), 'none')", connection);
                command.Parameters.Add(new NpgsqlParameter { Value = id });
                return (string)(await command.ExecuteScalarAsync())!;
            }, state => state == "0/Handled", seconds: Eventually.BackgroundSeconds,
            what: "The replayed letter was not handled (dead letters with its id / its status in the inbox)");
    }

    private HttpClient Operator() => app.Client(ModularChatApp.NewUser("operator"), roles: "operator");

    private static async Task<DeadLetterPageDto> PageAsync(HttpClient client, string query)
        => await (await client.GetAsync(Path + query)).ReadAs<DeadLetterPageDto>(HttpStatusCode.OK);

    private static async Task AssertBadRequestAsync(HttpResponseMessage response, string field, string says)
    {
        var problem = await response.ShouldBeProblem(400);
        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), $"no error for '{field}': {problem}");
        Assert.Contains(says, problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    private sealed record DeadLetterDto(
        Guid Id, string MessageType, string? TenantId, string? Queue, string? ExceptionType, string? ExceptionMessage,
        DateTimeOffset? FailedAt, DateTimeOffset SentAt, int Attempts, bool Replayable, int ReplayCount);

    private sealed record DeadLetterPageDto(List<DeadLetterDto> Items, string? NextCursor);

    private sealed record ReplayedDto(int Replayed);

    private sealed record DiscardedDto(int Discarded);
}

/// <summary>The failure of a letter a test put into the dead-letter store (top level: Wolverine names nested types with a dot).</summary>
internal sealed class StagedFailure(string message) : Exception(message);
