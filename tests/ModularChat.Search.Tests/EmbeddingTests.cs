using System.Net;
using System.Diagnostics.Metrics;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using ModularChat.BuildingBlocks.Security;
using ModularChat.BuildingBlocks.Telemetry;
using ModularChat.Testing.Fakes;
using Npgsql;
using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

/// <summary>Embeddings from a tenant's OpenAI-compatible provider, model changes, failures.</summary>
[Collection(AppCollection.Name)]
public sealed class EmbeddingTests(SearchApp app) : IDisposable
{
    // Tests replace the fake model's embedder (a throwing one, too); each test gives back what it found when it ends.
    private readonly Func<string, float[]> _embedder = app.OpenAi.Embedder;
    private readonly Func<RecordedRequest, FakeReply?> _embeddingFailure = app.OpenAi.EmbeddingFailure;

    public void Dispose() => (app.OpenAi.Embedder, app.OpenAi.EmbeddingFailure, app.OpenAi.RawEmbedding, app.OpenAi.BeforeEmbedding)
        = (_embedder, _embeddingFailure, _ => null, _ => Task.CompletedTask);

    [Fact]
    public async Task A_tenant_whose_model_is_slow_does_not_hold_back_other_tenants_embeddings()
    {
        // The slow tenant's model takes its time (it answers only when the test lets it, as a model answering in 95 s would,
        // within the request timeout, so nothing fails or is deferred); the others' entries are embedded meanwhile.
        const string marker = "zqx-slow-model";
        var slow = ModularChatApp.NewUser();
        var other = ModularChatApp.NewUser();
        var answer = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        app.OpenAi.Embedder = TopicEmbedding;
        app.OpenAi.BeforeEmbedding = async r =>
        {
            if (r.Body["input"]?.ToJsonString().Contains(marker, StringComparison.Ordinal) == true)
            {
                held.TrySetResult();
                await answer.Task;
            }
        };
        await app.Providers.UseAsync(slow, "fake-embed-3");
        try
        {
            using var slowClient = app.Client(slow);
            await slowClient.StartConversation("slow", Message($"I finally bought a car last week. {marker}"), Message($"The recipe calls for two onions. {marker}"));
            await held.Task.WaitAsync(TimeSpan.FromSeconds(30));

            using var otherClient = app.Client(other);
            await otherClient.StartConversation("pets", Message("Our dog chased the mailman again."), Message("My violin lessons start on Tuesday."));
            var status = await otherClient.WaitForIndexing(2);

            Assert.Equal(2, status.Embedded);
            Assert.False(answer.Task.IsCompleted);
            Assert.Equal(2, (await slowClient.SearchStatus()).Pending);

            // Nothing of the slow tenant is lost or failed: once its model answers, its entries are embedded.
            answer.SetResult();
            Assert.Equal(2, (await slowClient.WaitForIndexing(2)).Embedded);
            Assert.Equal(0, await AttemptsAsync(slow));
        }
        finally
        {
            answer.TrySetResult();
            await app.Providers.UseAsync(slow, null);
        }
    }

    [Fact]
    public async Task A_stopping_node_claims_no_entries_and_leaves_them_queued_for_another_node()
    {
        // The main node's embedding of the tenant's first message is held by its model: the tenant is in flight there, so the
        // main node claims none of the tenant's other entries meanwhile, and a second node is the only one that can.
        var user = ModularChatApp.NewUser();
        var marker = "m" + Guid.NewGuid().ToString("N")[..12];
        var answer = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        app.OpenAi.BeforeEmbedding = async r =>
        {
            if (r.Body["input"]?.ToJsonString().Contains($"held {marker}", StringComparison.Ordinal) == true)
            {
                held.TrySetResult();
                await answer.Task;
            }
        };
        await app.Providers.UseAsync(user, "fake-embed-3");
        var draining = new RequestsDraining();
        Alba.IAlbaHost? second = null;
        try
        {
            using var client = app.Client(user);
            await client.StartConversation("held", Message($"The lighthouse keeper wrote in his diary. held {marker}"));
            await held.Task.WaitAsync(TimeSpan.FromSeconds(30));

            // Stopped first (registered last), as Kestrel is, and as slowly as its requests drain: until the test lets it go.
            second = await app.StartHostAsync(services: services => services.AddHostedService(_ => draining));
            var worker = second.Services.GetRequiredService<ModularChat.Search.Embeddings.EmbeddingWorker>();

            // While it runs, the second node embeds the tenant's entries.
            await client.StartConversation("before", Message($"The ferry left at dawn. before {marker}"));
            await Eventually.Until(() => Task.FromResult(EmbeddingRequestsAbout($"before {marker}")), n => n >= 1, what: "the second node embedding the tenant's entry");

            // SIGTERM: it runs on while its requests drain, but claims nothing more.
            second.Services.GetRequiredService<Microsoft.Extensions.Hosting.IHostApplicationLifetime>().StopApplication();
            await draining.Began.WaitAsync(TimeSpan.FromSeconds(10));
            await client.StartConversation("after", Message($"The storm closed the harbour. after {marker}"));
            const string afterRow = "select p.attempts from modularchat.mc_search_pending p join modularchat.mc_search_entries e " +
                                    "on e.tenant_id = p.tenant_id and e.id = p.entry_id where p.tenant_id = $1 and e.content like $2 and p.not_before <= now()";
            await Eventually.Until(() => QueryAsync<int>(afterRow, user, $"%after {marker}%"), rows => rows.Count == 1, what: "the entry appended after the stop, queued and due");

            // Ten of its polls later the entry is still queued, due, with no attempt: the stopping node left it alone.
            await Task.Delay(TimeSpan.FromSeconds(1));
            Assert.Equal(0, EmbeddingRequestsAbout($"after {marker}"));
            Assert.Equal([0], await QueryAsync<int>(afterRow, user, $"%after {marker}%"));
            Assert.True(worker.ExecuteTask?.IsCompleted, "the stopping node's embedding worker still runs");

            // Once the main node's model answers, it embeds the rest of the tenant's entries.
            answer.SetResult();
            Assert.Equal(3, (await client.WaitForIndexing(3)).Embedded);
            Assert.Equal(1, EmbeddingRequestsAbout($"after {marker}"));
        }
        finally
        {
            answer.TrySetResult();
            draining.Release();
            if (second is not null)
            {
                await second.DisposeAsync();
            }

            await app.Providers.UseAsync(user, null);
        }
    }

    [Theory]
    [InlineData("semantic")]
    [InlineData("hybrid")]
    public async Task A_query_embedding_out_of_range_answers_with_keyword_hits_saying_so(string mode)
    {
        var user = ModularChatApp.NewUser();
        app.OpenAi.Embedder = TopicEmbedding;
        await app.Providers.UseAsync(user, "fake-embed-3");
        try
        {
            using var client = app.Client(user);
            await client.StartConversation("cars", Message("I finally bought a car last week."), Message("The recipe calls for two onions."));
            await client.WaitForIndexing(2);
            var query = "car " + Guid.NewGuid().ToString("N");
            app.OpenAi.RawEmbedding = text => text == query ? "[1e39, 0.5, 0.25, 0.125]" : null; // past a float's range: infinite

            var result = await (await client.GetAsync($"/api/search?q={Uri.EscapeDataString(query)}&mode={mode}&diversity=0.5")).ReadAs<SearchResult>(HttpStatusCode.OK);

            Assert.Contains("unusable vector", result.Semantic.Problem, StringComparison.Ordinal);
            Assert.All(result.Hits, h => Assert.True(double.IsFinite(h.Score)));
        }
        finally
        {
            await app.Providers.UseAsync(user, null);
        }
    }

    [Fact]
    public async Task A_tenant_with_a_provider_is_embedded_by_its_OpenAI_compatible_endpoint()
    {
        var user = ModularChatApp.NewUser();
        app.OpenAi.Embedder = TopicEmbedding;
        await app.Providers.UseAsync(user, "fake-embed-3");
        using var client = app.Client(user);
        await client.StartConversation("cars",
            Message("I finally bought a car last week."),
            Message("The recipe calls for two onions."),
            Message("Our dog chased the mailman again."));
        var status = await client.WaitForIndexing(3);

        // A real model knows "automobile" means car although they share no letters; the fake one does too.
        var result = await (await client.GetAsync("/api/search?q=automobile&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK);

        Assert.Equal("provider:fake-openai:fake-embed-3", status.Model);
        Assert.Equal("provider:fake-openai:fake-embed-3", result.Semantic.Model);
        Assert.Contains("car", result.Hits[0].Snippet, StringComparison.Ordinal);
        Assert.Contains(app.OpenAi.Requests, r => r.Path == "/v1/embeddings" && r.Body["model"]?.ToString() == "fake-embed-3" && r.Authorization == "Bearer test-key");
        Assert.Equal([(string)"provider:fake-openai:fake-embed-3:4"], await StoredModelsAsync(user));
    }

    [Fact]
    public async Task A_query_is_embedded_by_each_tenants_own_provider_when_two_tenants_name_theirs_alike()
    {
        // The same provider name and model (the model id both tenants' vectors carry); their endpoints could differ.
        var (alice, bob) = (ModularChatApp.NewUser("alice"), ModularChatApp.NewUser("bob"));
        await app.Providers.UseAsync(alice, "fake-embed-3");
        await app.Providers.UseAsync(bob, "fake-embed-3");
        try
        {
            var query = "orchids" + Guid.NewGuid().ToString("N");
            int Embedded() => app.OpenAi.Requests.Count(r => r.Path == "/v1/embeddings" && r.Body["input"]!.ToJsonString().Contains(query, StringComparison.Ordinal));
            async Task Search(string user)
            {
                using var client = app.Client(user);
                var result = await (await client.GetAsync($"/api/search?q={query}&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK);
                Assert.Equal("provider:fake-openai:fake-embed-3", result.Semantic.Model);
            }

            await Search(alice);
            await Search(alice);
            Assert.Equal(1, Embedded()); // a tenant's repeated search is embedded once

            await Search(bob);
            Assert.Equal(2, Embedded()); // by bob's provider, not alice's vector
        }
        finally
        {
            await app.Providers.UseAsync(alice, null);
            await app.Providers.UseAsync(bob, null);
        }
    }

    [Fact]
    public async Task The_global_embedding_endpoints_errors_reach_the_worker_without_its_key()
    {
        // Search:Embeddings:Endpoint/ApiKey (the model for tenants without a provider) is wrapped the same way: a server
        // that echoes the key in its error must not get it into the worker's log line.
        const string key = "sk-global-embedding-7c1e";
        var marker = "m" + Guid.NewGuid().ToString("N")[..12];
        app.OpenAi.EmbeddingFailure = r => r.Body["input"]?.ToJsonString().Contains(marker, StringComparison.Ordinal) == true
            ? FakeReply.Error(401, $"Incorrect API key provided: {key}.")
            : null;
        try
        {
            using var generator = new FailureTranslatingEmbeddingGenerator(
                new OpenAI.Embeddings.EmbeddingClient("global-embed", new System.ClientModel.ApiKeyCredential(key),
                    new OpenAI.OpenAIClientOptions { Endpoint = app.OpenAi.BaseUrl }).AsIEmbeddingGenerator(), ModelFailures.Scrubbed(key));

            var failure = await Assert.ThrowsAsync<ModelServerException>(() => generator.GenerateAsync([marker]));

            Assert.Contains("401", failure.Message, StringComparison.Ordinal);
            Assert.Contains("Incorrect API key provided", failure.Message, StringComparison.Ordinal);
            Assert.DoesNotContain(key, failure.Message, StringComparison.Ordinal);
            Assert.Contains(app.OpenAi.Requests, r => r.Authorization == "Bearer " + key);
        }
        finally
        {
            app.OpenAi.EmbeddingFailure = _ => null;
        }
    }

    [Fact]
    public async Task Changing_a_tenants_embedding_model_embeds_its_entries_again()
    {
        var user = ModularChatApp.NewUser();
        app.OpenAi.Embedder = TopicEmbedding;
        using var client = app.Client(user);
        await client.StartConversation("switch", Message("The car needs new tyres."), Message("Dinner was a vegetable soup.", "assistant"));
        await client.WaitForIndexing(2);
        Assert.Equal(["modularchat-hashed-v1-d1024:1024"], await StoredModelsAsync(user));

        await app.Providers.UseAsync(user, "fake-embed-large");
        var models = await Eventually.Until(() => StoredModelsAsync(user), m => m.SequenceEqual(["provider:fake-openai:fake-embed-large:4"]));
        Assert.Equal(["provider:fake-openai:fake-embed-large:4"], models);
        await client.WaitForIndexing(2);
        var hits = (await (await client.GetAsync("/api/search?q=automobile&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
        Assert.Contains("car", hits[0].Snippet, StringComparison.Ordinal);

        await app.Providers.UseAsync(user, null);
        models = await Eventually.Until(() => StoredModelsAsync(user), m => m.SequenceEqual(["modularchat-hashed-v1-d1024:1024"]));
        Assert.Equal(["modularchat-hashed-v1-d1024:1024"], models);
    }

    [Fact]
    public async Task When_the_provider_fails_entries_wait_and_searches_answer_with_keyword_hits()
    {
        var user = ModularChatApp.NewUser();
        await app.Providers.UseAsync(user, "fake-broken");
        app.OpenAi.Embedder = text => text.Contains("violin", StringComparison.Ordinal) || text == "violin lessons"
            ? throw new InvalidOperationException("the model is down")
            : TopicEmbedding(text);
        try
        {
            using var client = app.Client(user);
            await client.StartConversation("music", Message("My violin lessons start on Tuesday."));
            await Eventually.Until(() => AttemptsAsync(user), a => a > 0);

            var result = await (await client.GetAsync("/api/search?q=violin+lessons")).ReadAs<SearchResult>(HttpStatusCode.OK);

            Assert.False(result.Semantic.Available);
            Assert.Equal("The embedding service failed to embed the query; results are keyword matches only.", result.Semantic.Problem);
            Assert.Contains("violin", Assert.Single(result.Hits).Snippet, StringComparison.Ordinal);
            Assert.Equal(1, (await client.SearchStatus()).Pending);
        }
        finally
        {
            await app.Providers.UseAsync(user, null);
        }
    }

    [Fact]
    public async Task An_entry_the_model_refuses_waits_alone_and_the_entries_claimed_with_it_are_embedded()
    {
        // A text the model does not take (here: longer than its context, as OpenAI answers it) fails the whole call it is in.
        const string marker = "zqx-refused-text";
        var user = ModularChatApp.NewUser();
        app.OpenAi.Embedder = TopicEmbedding;
        app.OpenAi.EmbeddingFailure = r => r.Body["input"]?.ToJsonString().Contains(marker, StringComparison.Ordinal) == true
            ? new FakeReply(Status: 400, ErrorMessage: "This model's maximum context length is 8192 tokens, however you requested 9120 tokens")
            : null;
        await app.Providers.UseAsync(user, "fake-embed-3");
        try
        {
            using var client = app.Client(user);
            await client.StartConversation("mixed",
                Message("I finally bought a car last week."),
                Message("The recipe calls for two onions."),
                Message($"Here is the whole log: {marker}"),
                Message("Our dog chased the mailman again."),
                Message("My violin lessons start on Tuesday."));
            await Eventually.Until(() => AttemptsAsync(user), a => a > 0);

            // The four others are embedded and found; only the refused one waits, and the log says which it is.
            Assert.Equal(4, await Eventually.Until(() => ExecuteAsync<int>(
                "select count(*)::int from modularchat.mc_search_vectors where tenant_id = $1", user), n => n == 4));
            var refused = await ExecuteAsync<Guid>(
                "select id from modularchat.mc_search_entries where tenant_id = $1 and content like '%' || $2 || '%'", user, marker);
            Assert.Equal([refused], await QueryAsync<Guid>("select entry_id from modularchat.mc_search_pending where tenant_id = $1", user));
            var hits = (await (await client.GetAsync("/api/search?q=automobile&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
            Assert.Contains("car", hits[0].Snippet, StringComparison.Ordinal);
            Assert.Contains(app.Logs.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains($"refused search entry {refused}", StringComparison.Ordinal)
                && e.Message.Contains("maximum context length", StringComparison.Ordinal));
        }
        finally
        {
            app.OpenAi.EmbeddingFailure = _ => null;
            await app.Providers.UseAsync(user, null);
        }
    }

    [Fact]
    public async Task An_entry_the_model_keeps_refusing_is_given_up_counted_as_refused_and_queued_again_when_the_model_changes()
    {
        const string marker = "zqx-always-refused";
        var user = ModularChatApp.NewUser();
        using var givenUp = new MetricCollector<long>(
            app.Host.Services.GetRequiredService<IMeterFactory>(), ModularChatTelemetry.SourceName, MetricNames.SearchEmbeddingsGivenUp);
        app.OpenAi.Embedder = TopicEmbedding;
        app.OpenAi.EmbeddingFailure = r => r.Body["model"]?.ToString() == "fake-embed-3" && r.Body["input"]?.ToJsonString().Contains(marker, StringComparison.Ordinal) == true
            ? new FakeReply(Status: 400, ErrorMessage: "This model's maximum context length is 8192 tokens, however you requested 9120 tokens")
            : null;
        await app.Providers.UseAsync(user, "fake-embed-3");
        try
        {
            using var client = app.Client(user);
            await client.StartConversation("kept refusing", Message("I finally bought a car last week."), Message($"Here is the whole log: {marker}"));

            // Search:Embeddings:MaxRefusedAttempts is 3 here: refused at its third attempt, the entry is no longer retried. The
            // status counts it apart, and does not wait for it.
            var status = await Eventually.Until(client.SearchStatus, s => s.Refused > 0, seconds: 60, what: "The refused entry was not given up");
            Assert.Equal((2L, 1L, 0L, 1L, true), (status.Entries, status.Embedded, status.Pending, status.Refused, status.UpToDate));
            var refused = await ExecuteAsync<Guid>(
                "select id from modularchat.mc_search_entries where tenant_id = $1 and content like '%' || $2 || '%'", user, marker);
            Assert.Equal((3, true), await QueryRowAsync<int, bool>(
                "select attempts, not_before = 'infinity' from modularchat.mc_search_pending where tenant_id = $1 and entry_id = $2", user, refused));
            // A warning for each refusal that is retried, an error for the one that gives it up.
            var logged = app.Logs.Entries.Where(e => e.Message.Contains($"refused search entry {refused}", StringComparison.Ordinal)).Select(e => e.Level);
            Assert.Equal([LogLevel.Warning, LogLevel.Warning, LogLevel.Error], logged);
            Assert.Contains(app.Logs.Entries, e => e.Level == LogLevel.Error && e.Message.Contains("no longer retried", StringComparison.Ordinal)
                && e.Message.Contains("maximum context length", StringComparison.Ordinal));
            Assert.Equal(1, givenUp.GetMeasurementSnapshot().Sum(m => m.Value));
            // Keyword search still finds it.
            Assert.Equal(refused, (await (await client.GetAsync($"/api/search?q={marker}&mode=keyword")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits[0].Id);

            // Another model is asked again (this one takes the text).
            await app.Providers.UseAsync(user, "fake-embed-4");
            var after = await Eventually.Until(client.SearchStatus, s => s.Model.EndsWith("fake-embed-4", StringComparison.Ordinal) && s.Embedded == 2,
                seconds: 60, what: "The refused entry was not embedded by the next model");
            Assert.Equal((0L, 0L, true), (after.Pending, after.Refused, after.UpToDate));
        }
        finally
        {
            app.OpenAi.EmbeddingFailure = _ => null;
            await app.Providers.UseAsync(user, null);
        }
    }

    [Fact]
    public async Task The_status_is_not_up_to_date_while_a_model_change_has_not_queued_the_entries_again()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        await client.StartConversation("model change", Message("I finally bought a car last week."));
        Assert.True((await client.WaitForIndexing(1)).UpToDate);

        // As right after the tenant's model changed: its vectors are another model's, and nothing is queued yet (the worker
        // notices a change at its next model check, at most Search:Embeddings:ModelCheckInterval later).
        await ExecuteAsync<int>("update modularchat.mc_search_models set model = 'retired-model' where tenant_id = $1 returning 1", user);
        var changed = await client.SearchStatus();

        Assert.False(changed.UpToDate);
        // The worker queues the entries again (its model check), and the status is up to date once they are embedded.
        await Eventually.Until(client.SearchStatus, s => s.UpToDate && s.Embedded == 1, seconds: 60, what: "The status did not come back up to date");
    }

    [Fact]
    public async Task An_entry_embedded_with_a_tenants_new_model_before_the_model_check_does_not_hide_the_change_from_it()
    {
        // A node of its own that checks a tenant's model only when a search first meets it, not every so often.
        await using var node = await app.StartHostProcessAsync(new Dictionary<string, string>(FastCluster())
        {
            ["Search__Embeddings__ModelCheckInterval"] = "01:00:00",
            ["OutboundNetwork__AllowPrivateNetworks"] = "true",
            ["Providers__CacheDuration"] = "00:00:01",
        });
        app.OpenAi.Embedder = TopicEmbedding;
        using var client = node.Client(app.Token(ModularChatApp.NewUser("model-change")));
        var conversation = await client.StartConversation("model change", Message("I finally bought a car last week."));
        var builtIn = (await client.WaitForIndexing(1)).Model;

        // The tenant's model changes; the next entry is embedded with it before any check has queued the others again.
        await (await client.PostJson("/api/providers", new
        {
            name = "fake-openai", kind = "openai-compatible", endpoint = app.OpenAi.BaseUrl.ToString(), chatModel = "fake-chat",
            embeddingModel = "fake-embed-3", apiKey = "test-key",
        })).ReadAs<JsonElement>(HttpStatusCode.Created);
        await Eventually.Until(client.SearchStatus, s => s.Model != builtIn, what: "The node did not see the tenant's new model");
        (await client.PostJson($"/api/conversations/{conversation}/messages", new { role = "user", content = "The recipe calls for two onions." }))
            .EnsureSuccessStatusCode();
        var afterNewEntry = await Eventually.Until(client.SearchStatus, s => s.Entries == 2 && s.Pending == 0 && s.Embedded == 1,
            what: "The new entry was not embedded with the new model");

        // Storing its vector used to record the new model as the one the tenant's vectors were made with: the check then
        // found nothing changed, and the first entry stayed out of semantic search for good, with the status up to date.
        Assert.False(afterNewEntry.UpToDate);
        await client.Search("automobile"); // a search makes the node check the tenant's model
        var status = await Eventually.Until(client.SearchStatus, s => s.UpToDate, seconds: 60, what: "The status did not come back up to date");
        Assert.Equal((2L, 2L), (status.Entries, status.Embedded));
        // The node's in-memory vectors follow the stored ones within a moment.
        await Eventually.Until(async () => await (await client.GetAsync("/api/search?q=automobile&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK),
            r => r.Hits.Count > 0 && r.Hits[0].Snippet.Contains("car", StringComparison.Ordinal), seconds: 60, what: "Semantic search did not find the first entry");
    }

    [Fact]
    public async Task A_model_that_refuses_every_input_is_asked_twice_per_attempt_not_once_per_entry()
    {
        // A model name the server does not know, answered 400 as some servers do: no one text is at fault.
        var user = ModularChatApp.NewUser();
        app.OpenAi.EmbeddingFailure = r => r.Body["model"]?.ToString() == "fake-unknown-model"
            ? new FakeReply(Status: 400, ErrorMessage: "model 'fake-unknown-model' not found")
            : null;
        await app.Providers.UseAsync(user, "fake-unknown-model");
        try
        {
            using var client = app.Client(user);
            await client.StartConversation("many", Enumerable.Range(1, 8).Select(i => Message($"Message number {i} about nothing much.")).ToArray());
            await Eventually.Until(() => AttemptsAsync(user), a => a >= 2);

            // Each attempt sends the batch, then its shortest text alone; splitting the batch down to each text would take 15 calls.
            var before = await AttemptsAsync(user);
            var requests = app.OpenAi.Requests.Count(r => r.Path == "/v1/embeddings" && r.Body["model"]?.ToString() == "fake-unknown-model");
            var after = await AttemptsAsync(user);
            Assert.InRange(requests, 2 * before, 2 * after + 2); // + a round whose calls are made and whose attempt is not yet counted
            Assert.Equal(8, (await client.SearchStatus()).Pending);
        }
        finally
        {
            app.OpenAi.EmbeddingFailure = _ => null;
            await app.Providers.UseAsync(user, null);
        }
    }

    [Fact]
    public async Task Vectors_are_stored_as_int8_and_a_float32_one_is_read_then_quantized_without_calling_the_model()
    {
        var user = ModularChatApp.NewUser();
        app.OpenAi.Embedder = TopicEmbedding;
        await app.Providers.UseAsync(user, "fake-embed-3");
        try
        {
            using var client = app.Client(user);
            await client.StartConversation("formats", Message("I finally bought a car last week."), Message("Our dog chased the mailman again."));
            await client.WaitForIndexing(2);
            Assert.Equal([8, 8], await VectorLengthsAsync(user)); // 4 dimensions: a float32 scale and a byte each

            // A float32 vector (the only format before 2026-12-02) is read as it was written: here, the car message as one about dogs.
            var before = await ScoreOfCarAsync(client, "cat");
            var car = await ExecuteAsync<Guid>(
                "select id from modularchat.mc_search_entries where tenant_id = $1 and content like '%car%'", user);
            await ExecuteAsync<int>(
                "update modularchat.mc_search_vectors set vector = $2, txid = pg_current_xact_id() where tenant_id = $1 and entry_id = $3 returning 1",
                user, TopicEmbedding("dog").SelectMany(BitConverter.GetBytes).ToArray(), car);
            Assert.Equal([8, 16], await VectorLengthsAsync(user));
            var after = await ScoreOfCarAsync(client, "cat");
            Assert.True(after - before > 0.8, $"{before} -> {after}"); // its own cosine with "cat" went from ~0 to ~1

            // Queued again (a rebuild), it is written again in the configured format from the floats stored, as the model gave
            // them for this text (here: the dog's), without a call to the model, which would only answer the same at a price.
            var carEmbeddings = CarEmbeddingRequests();
            await RequeueAsync(user, car);
            Assert.Equal([8, 8], await Eventually.Until(() => VectorLengthsAsync(user), l => l.SequenceEqual([8, 8])));
            var quantized = await ScoreOfCarAsync(client, "cat");
            Assert.True(Math.Abs(quantized - after) < 0.02, $"{after} -> {quantized}"); // still the dog's vector, now in int8
            Assert.Equal(carEmbeddings, CarEmbeddingRequests());

            // An int8 vector of another text (an edit) is embedded again: the model is asked for the car message.
            await ExecuteAsync<int>(
                "update modularchat.mc_search_vectors set text_hash = text_hash + 1 where tenant_id = $1 and entry_id = $2 returning 1", user, car);
            await RequeueAsync(user, car);
            await Eventually.Until(() => Task.FromResult(CarEmbeddingRequests()), n => n > carEmbeddings, what: "a request to embed the car message");
            Assert.Equal(before, await Eventually.Until(() => ScoreOfCarAsync(client, "cat"), s => Math.Abs(s - before) < 1e-3), 3);
        }
        finally
        {
            await app.Providers.UseAsync(user, null);
        }
    }

    private int EmbeddingRequestsAbout(string text)
        => app.OpenAi.Requests.Count(r => r.Path == "/v1/embeddings" && r.Body["input"]?.ToJsonString().Contains(text, StringComparison.Ordinal) == true);

    private int CarEmbeddingRequests() => app.OpenAi.Requests.Count(r => r.Path == "/v1/embeddings" && r.Body.ToJsonString().Contains("bought a car", StringComparison.Ordinal));

    private Task<int> RequeueAsync(string tenant, Guid entry) => ExecuteAsync<int>(
        "insert into modularchat.mc_search_pending (tenant_id, entry_id, conversation_id) " +
        "select tenant_id, id, conversation_id from modularchat.mc_search_entries where tenant_id = $1 and id = $2 returning 1", tenant, entry);

    /// <summary>A tiny "language model": one dimension per topic, synonyms included.</summary>
    private static float[] TopicEmbedding(string text)
    {
        string[][] topics = [["car", "automobile", "tyres", "vehicle"], ["soup", "onions", "recipe", "dinner", "vegetable"], ["dog", "mailman", "cat"], ["violin", "music"]];
        var lower = text.ToLowerInvariant();
        var vector = topics.Select(words => words.Count(w => lower.Contains(w, StringComparison.Ordinal)) + 0.01f).ToArray();
        var norm = MathF.Sqrt(vector.Sum(v => v * v));
        return vector.Select(v => v / norm).ToArray();
    }

    private Task<List<string>> StoredModelsAsync(string tenant) => QueryAsync<string>(
        "select distinct model || ':' || dimensions from modularchat.mc_search_vectors where tenant_id = $1 order by 1", tenant);

    private static async Task<double> ScoreOfCarAsync(HttpClient client, string query)
    {
        var hits = (await (await client.GetAsync($"/api/search?q={query}&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
        return hits.Single(h => h.Snippet.Contains("car", StringComparison.Ordinal)).Score;
    }

    private Task<List<int>> VectorLengthsAsync(string tenant)
        => QueryAsync<int>("select octet_length(vector) from modularchat.mc_search_vectors where tenant_id = $1 order by 1", tenant);

    private Task<int> AttemptsAsync(string tenant)
        => ExecuteAsync<int>("select coalesce(max(attempts), 0) from modularchat.mc_search_pending where tenant_id = $1", tenant);

    /// <summary>The first two columns of the only row.</summary>
    private async Task<(T1, T2)> QueryRowAsync<T1, T2>(string sql, params object[] parameters)
        => Assert.Single(await RowsAsync(sql, parameters, reader => (reader.GetFieldValue<T1>(0), reader.GetFieldValue<T2>(1))));

    /// <summary>The first column of the first row.</summary>
    private async Task<T> ExecuteAsync<T>(string sql, params object[] parameters) => (await QueryAsync<T>(sql, parameters))[0];

    /// <summary>The first column of every row.</summary>
    private Task<List<T>> QueryAsync<T>(string sql, params object[] parameters) => RowsAsync(sql, parameters, reader => reader.GetFieldValue<T>(0));

    /// <summary>Every row, as <paramref name="row"/> reads it.</summary>
    private async Task<List<T>> RowsAsync<T>(string sql, object[] parameters, Func<NpgsqlDataReader, T> row)
    {
        await using var connection = await app.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var parameter in parameters)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = parameter });
        }

        var values = new List<T>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            values.Add(row(reader));
        }

        return values;
    }
}
