using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using static ModularChat.Search.Tests.Api;

namespace ModularChat.Search.Tests;

[Collection(AppCollection.Name)]
public sealed class SearchingTests(SearchApp app)
{
    [Fact]
    public async Task A_message_is_found_by_its_words_with_its_place_and_a_highlighted_snippet()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var at = new DateTimeOffset(2025, 3, 14, 9, 30, 0, TimeSpan.Zero);
        var id = await client.StartConversation("trip",
            Message("Where should we stay in Lisbon?", externalId: "m-1", metadata: new { speaker = "Ana" }, createdAt: at),
            Message("Alfama, or one of the hotels by the river <with a view>.", "assistant", "m-2", createdAt: at.AddMinutes(1)),
            Message("Let us book the museum tickets too.", externalId: "m-3", createdAt: at.AddMinutes(2)));
        await client.WaitForIndexing(3);

        var result = await client.Search("hotel%20river");

        var hit = result.Hits[0];
        Assert.Equal(id, hit.ConversationId);
        Assert.Equal("message", hit.Kind);
        Assert.Equal(2, hit.Sequence);
        Assert.Equal("m-2", hit.ExternalId);
        Assert.Equal("assistant", hit.Role);
        Assert.Equal(at.AddMinutes(1), hit.CreatedAt);
        Assert.True(hit.Score > 0);
        Assert.Equal(1, hit.KeywordRank);
        var highlighted = hit.Highlights.Select(h => hit.Snippet.Substring(h.Start, h.Length)).ToList();
        Assert.Contains("hotels", highlighted);
        Assert.Contains("river", highlighted);
        Assert.Contains("<mark>hotels</mark>", hit.HighlightedSnippet, StringComparison.Ordinal);
        Assert.Contains("river</mark> &lt;with a view", hit.HighlightedSnippet, StringComparison.Ordinal); // the text itself is escaped
        Assert.Equal("modularchat-hashed-v1-d1024", result.Semantic.Model);
        Assert.True(result.Semantic.Available);
    }

    [Fact]
    public async Task A_hit_gives_a_messages_time_as_the_messages_api_does_and_time_filters_compare_instants_across_offsets()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var written = new DateTimeOffset(2026, 3, 1, 10, 0, 0, TimeSpan.FromHours(2)); // 08:00 UTC
        var id = await client.StartConversation("offsets",
            Message("the lighthouse keeper wrote at ten", createdAt: written),
            Message("a later lighthouse note", "assistant", createdAt: written.AddHours(1)));
        await client.WaitForIndexing(2);

        var first = (await (await client.GetAsync($"/api/conversations/{id}/messages/1")).ReadAs<JsonElement>(HttpStatusCode.OK)).GetProperty("createdAt").GetString();
        var second = (await (await client.GetAsync($"/api/conversations/{id}/messages/2")).ReadAs<JsonElement>(HttpStatusCode.OK)).GetProperty("createdAt").GetString();
        var hits = (await (await client.GetAsync("/api/search?q=lighthouse&mode=keyword&context=1")).ReadAs<JsonElement>(HttpStatusCode.OK))
            .GetProperty("hits").EnumerateArray().ToDictionary(h => h.GetProperty("sequence").GetInt64());

        // The same text as the messages API writes, offset included, in the hits and in their neighbouring turns.
        Assert.Equal(first, hits[1].GetProperty("createdAt").GetString());
        Assert.Equal(second, hits[2].GetProperty("createdAt").GetString());
        Assert.Equal(first, hits[2].GetProperty("before")[0].GetProperty("createdAt").GetString());
        Assert.Equal(second, hits[1].GetProperty("after")[0].GetProperty("createdAt").GetString());

        // Filters compare instants, whatever offset they or the messages were written with (+ is %2B in a query string),
        // in both lists.
        foreach (var mode in new[] { "keyword", "semantic" })
        {
            Assert.Equal(new long[] { 1, 2 }, await Sequences(mode, "from=2026-03-01T09:00:00%2B02:00"));
            Assert.Equal(new long[] { 2 }, await Sequences(mode, "from=2026-03-01T10:00:01%2B02:00"));
            Assert.Equal(new long[] { 2 }, await Sequences(mode, "from=2026-03-01T08:30:00Z"));
            Assert.Equal(new long[] { 1 }, await Sequences(mode, "to=2026-03-01T10:00:00%2B02:00"));
            Assert.Equal(new long[] { 1 }, await Sequences(mode, "to=2026-03-01T03:30:00-04:30"));
            Assert.Empty(await Sequences(mode, "to=2026-03-01T07:59:59Z"));
        }

        async Task<long[]> Sequences(string mode, string filter)
            => [.. (await client.Search($"lighthouse&mode={mode}&conversationId={id}&{filter}")).Hits.Select(h => h.Sequence!.Value).Order()];
    }

    [Fact]
    public async Task Highlight_markers_in_a_message_do_not_highlight_its_words()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("markers", Message("ctrl \u0002marker\u0003 pizzeria end"));
        await client.WaitForIndexing(1);

        var hit = Assert.Single((await client.Search("pizzeria&mode=keyword")).Hits);

        // The markers ts_headline is given cannot be smuggled in through the text: they show as U+FFFD, unhighlighted.
        Assert.Equal(["pizzeria"], hit.Highlights.Select(h => hit.Snippet.Substring(h.Start, h.Length)));
        Assert.StartsWith("ctrl \uFFFDmarker\uFFFD <mark>pizzeria</mark>", hit.HighlightedSnippet, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_snippet_shows_the_angle_brackets_a_message_holds()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("brackets", Message("angle \u27E8vector\u27E9 <b>tag</b> pizzeria"));
        await client.WaitForIndexing(1);

        var hit = Assert.Single((await client.Search("pizzeria&mode=keyword")).Hits);

        Assert.Equal("angle \u27E8vector\u27E9 <b>tag</b> pizzeria", hit.Snippet);
        Assert.Equal(["pizzeria"], hit.Highlights.Select(h => hit.Snippet.Substring(h.Start, h.Length)));
        Assert.Equal("angle \u27E8vector\u27E9 &lt;b&gt;tag&lt;/b&gt; <mark>pizzeria</mark>", hit.HighlightedSnippet);
    }

    [Fact]
    public async Task A_short_message_is_its_own_snippet_whole_with_its_match_marked()
    {
        const string text = "Yeah, I painted that lake sunrise last year! It's special to me.";
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("short", Message(text));
        await client.StartConversation("tags", Message("<script>x</script> I love 😀 pizzeria end"));
        await client.WaitForIndexing(2);

        var special = Assert.Single((await client.Search("special&mode=keyword")).Hits);
        var pizzeria = Assert.Single((await client.Search("pizzeria&mode=keyword")).Hits);

        Assert.Equal(text, special.Snippet);
        Assert.Equal(["special"], special.Highlights.Select(h => special.Snippet.Substring(h.Start, h.Length)));
        Assert.Equal("<script>x</script> I love 😀 pizzeria end", pizzeria.Snippet);
    }

    [Fact]
    public async Task A_message_of_one_word_too_long_for_the_text_parser_shows_its_beginning()
    {
        // PostgreSQL's parser ignores words over 2047 characters, so ts_headline has nothing to show for such a message.
        var blob = string.Concat(Enumerable.Repeat("QmFzZTY0", 400));
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("pasted", Message(blob), Message($"  {blob}  "));
        await client.WaitForIndexing(2);

        // The two messages pass the summary's token threshold: the summary, which quotes them, may be found too.
        var hits = (await client.Search(blob[..40] + "&mode=semantic")).Hits.Where(h => h.Kind == "message").ToList();

        Assert.Equal([1L, 2L], hits.Select(h => h.Sequence).Order());
        Assert.Equal(blob[..300], hits.Single(h => h.Sequence == 1).Snippet);
        Assert.Equal("  " + blob[..298], hits.Single(h => h.Sequence == 2).Snippet);
        Assert.All(hits, h => Assert.Empty(h.Highlights));
    }

    [Fact]
    public async Task The_speaker_named_in_metadata_is_searchable_with_the_text()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("friends",
            Message("I went to a pottery class yesterday.", metadata: new { speaker = "Caroline" }),
            Message("I went to a pottery class last month.", "assistant", metadata: new { speaker = "Melanie" }));
        await client.WaitForIndexing(2);

        var hits = (await client.Search("pottery%20class%20Caroline")).Hits;

        Assert.Equal("Caroline", hits[0].Speaker);
    }

    [Fact]
    public async Task Semantic_search_matches_other_forms_of_a_word_that_keyword_search_misses()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("hobbies",
            Message("My grandfather took beautiful photographs of birds."),
            Message("We went hiking in the mountains last weekend."),
            Message("The soup needs more salt and pepper."));
        await client.WaitForIndexing(3);

        var keyword = await (await client.GetAsync("/api/search?q=photography&mode=keyword")).ReadAs<SearchResult>(HttpStatusCode.OK);
        var semantic = await (await client.GetAsync("/api/search?q=photography&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK);

        Assert.Empty(keyword.Hits); // PostgreSQL stems "photography" and "photographs" differently
        Assert.Contains("photographs", semantic.Hits[0].Snippet, StringComparison.Ordinal);
        Assert.Equal(1, semantic.Hits[0].SemanticRank);
    }

    [Fact]
    public async Task An_answer_is_found_through_the_question_it_answers()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("chat",
            Message("The weather was lovely today."),
            Message("What have you been researching lately?", "assistant"),
            Message("Mostly agencies, and what the paperwork involves."),
            Message("Sounds like a lot of work.", "assistant"),
            Message("I also repainted the kitchen."));
        await client.WaitForIndexing(5);

        var result = await (await client.GetAsync("/api/search?q=what+did+she+research&k=3&context=1")).ReadAs<SearchResult>(HttpStatusCode.OK);

        // The answer shares no word with the query: it is found because the question before it does.
        var answer = Assert.Single(result.Hits, h => h.Sequence == 3);
        Assert.Contains(result.Hits, h => h.Sequence == 2);
        Assert.Equal(2, Assert.Single(answer.Before!).Sequence);
        Assert.Equal(4, Assert.Single(answer.After!).Sequence);
    }

    [Fact]
    public async Task Filters_restrict_hits_by_conversation_scope_role_time_and_metadata()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var t0 = new DateTimeOffset(2024, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var first = await client.StartConversation("one",
            Message("garden tomatoes are ripe", metadata: new { speaker = "Ana", topic = "garden" }, createdAt: t0),
            Message("garden tomatoes need water", "assistant", metadata: new { speaker = "Bot" }, createdAt: t0.AddDays(10)));
        var second = await client.StartConversation("two",
            Message("garden tomatoes in the greenhouse", metadata: new { speaker = "Ana", topic = "greenhouse" }, createdAt: t0.AddDays(20)));
        await client.WaitForIndexing(3);

        async Task<List<Hit>> Hits(string filter)
            => (await (await client.GetAsync("/api/search?q=garden+tomatoes&" + filter)).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;

        Assert.Equal(3, (await Hits("")).Count);
        Assert.All(await Hits($"conversationId={second}"), h => Assert.Equal(second, h.ConversationId));
        Assert.Single(await Hits($"conversationId={second}"));
        Assert.Equal(["assistant"], (await Hits("role=assistant")).Select(h => h.Role));
        Assert.Equal(["assistant"], (await Hits("role=Assistant")).Select(h => h.Role)); // any case, as appends take it
        Assert.Equal([2L], (await Hits($"conversationId={first}&from=2024-01-05T00:00:00Z")).Select(h => h.Sequence!.Value));
        Assert.Equal([first], (await Hits("to=2024-01-15T00:00:00Z")).Select(h => h.ConversationId).Distinct());
        Assert.Equal([second], (await Hits("metadata=topic=greenhouse")).Select(h => h.ConversationId));
        Assert.Equal(2, (await Hits("metadata=speaker=Ana")).Count);
        Assert.Single(await Hits("metadata=speaker=Ana&metadata=topic=garden"));
        Assert.Empty(await Hits("scope=summaries"));
        Assert.Equal(3, (await Hits("scope=messages&mode=keyword")).Count);
        var semanticUsers = await Hits("mode=semantic&role=user");
        Assert.Equal(new[] { first, second }.Order(), semanticUsers.Select(h => h.ConversationId).Order());
        Assert.All(semanticUsers, h => Assert.Equal("user", h.Role));
    }

    [Fact]
    public async Task Metadata_holding_a_backslash_and_u0000_as_written_is_indexed_and_indexing_goes_on()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        // A backslash, then "u0000" (JSON "\\u0000"), no NUL character. Taking "\u0000" out of the JSON text turned the
        // first into another value and the second into invalid JSON, which stalled indexing for every tenant.
        const string path = @"C:\u0000\reports", note = @"see \u0000";
        var id = await client.StartConversation("escapes",
            Message("the quarterly reports folder", metadata: new { path }),
            Message("the quarterly reports are late", metadata: new { note }),
            Message("the quarterly reports are here"));
        await client.WaitForIndexing(3);

        async Task<Hit> Only(string key, string value)
            => Assert.Single((await (await client.GetAsync($"/api/search?q=quarterly+reports&metadata={Uri.EscapeDataString(key + "=" + value)}"))
                .ReadAs<SearchResult>(HttpStatusCode.OK)).Hits);

        var byPath = await Only("path", path);
        Assert.Equal((id, 1L, path), (byPath.ConversationId, byPath.Sequence!.Value, byPath.Metadata!["path"]));
        var byNote = await Only("note", note);
        Assert.Equal((id, 2L, note), (byNote.ConversationId, byNote.Sequence!.Value, byNote.Metadata!["note"]));
    }

    [Fact]
    public async Task A_word_of_two_thousand_letters_from_a_tenant_with_a_long_non_ASCII_id_is_indexed_and_indexing_goes_on()
    {
        // 256 three-byte characters (the longest tenant id) and a word that does not compress: their term-count key was
        // ~2.8 kB, past what a PostgreSQL index row holds, and the failing statement stalled indexing for every tenant.
        var random = new Random();
        var tenant = new string(Enumerable.Range(0, 256).Select(_ => (char)(0x4E00 + random.Next(0x5000))).ToArray());
        var word = new string(Enumerable.Range(0, 2040).Select(_ => (char)('a' + random.Next(26))).ToArray());
        using var client = app.Client(ModularChatApp.NewUser(), tenant);
        var id = await client.StartConversation("long word", Message($"the harbour pilot wrote {word}"));
        using var other = app.Client(ModularChatApp.NewUser());
        var next = await other.StartConversation("after it", Message("the harbour pilot came aboard at dawn"));

        await client.WaitForIndexing(1);
        await other.WaitForIndexing(1);

        var hit = Assert.Single((await (await client.GetAsync("/api/search?q=harbour+pilot&mode=keyword")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits);
        Assert.Equal(id, hit.ConversationId);
        Assert.Equal(next, Assert.Single((await (await other.GetAsync("/api/search?q=harbour+pilot&mode=keyword")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits).ConversationId);
    }

    [Fact]
    public async Task Conversation_metadata_restricts_hits_to_the_conversations_that_have_it_in_every_mode()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        async Task<Guid> Start(string title, object metadata, params object[] messages)
        {
            var id = (await (await client.PostJson("/api/conversations", new { title, metadata })).ReadAs<JsonElement>(HttpStatusCode.Created)).GetProperty("id").GetGuid();
            await (await client.PostJson($"/api/conversations/{id}/messages/batch", new { messages })).ReadAs<JsonElement>(HttpStatusCode.Created);
            return id;
        }

        var aliceWeb = await Start("a1", new { userId = "alice", channel = "web" },
            Message("the lighthouse keeper's diary"), Message("a lighthouse on the cliff", "assistant"));
        var aliceMobile = await Start("a2", new { userId = "alice", channel = "mobile" }, Message("lighthouse tours start at noon"));
        var bob = await Start("b", new { userId = "bob" }, Message("the lighthouse was painted red"));
        await client.WaitForIndexing(4);

        async Task<Guid[]> Conversations(string filter)
            => (await (await client.GetAsync("/api/search?q=lighthouse&" + filter)).ReadAs<SearchResult>(HttpStatusCode.OK))
                .Hits.Select(h => h.ConversationId).Distinct().Order().ToArray();

        foreach (var mode in new[] { "hybrid", "keyword", "semantic" })
        {
            Assert.Equal(new[] { aliceWeb, aliceMobile, bob }.Order(), await Conversations($"mode={mode}"));
            Assert.Equal(new[] { aliceWeb, aliceMobile }.Order(), await Conversations($"mode={mode}&conversationMetadata=userId=alice"));
            Assert.Equal([aliceWeb], await Conversations($"mode={mode}&conversationMetadata=userId=alice&conversationMetadata=channel=web"));
            Assert.Equal([bob], await Conversations($"mode={mode}&conversationMetadata=userId=bob"));
            Assert.Empty(await Conversations($"mode={mode}&conversationMetadata=userId=carol"));
            // Matching no conversation, the answer still names the embedding model as any other does.
            var unfiltered = await (await client.GetAsync($"/api/search?q=lighthouse&mode={mode}")).ReadAs<SearchResult>(HttpStatusCode.OK);
            var none = await (await client.GetAsync($"/api/search?q=lighthouse&mode={mode}&conversationMetadata=userId=carol")).ReadAs<SearchResult>(HttpStatusCode.OK);
            Assert.Equal(unfiltered.Semantic, none.Semantic);
            Assert.Equal(mode != "keyword", none.Semantic.Model is not null);
            Assert.Empty(await Conversations($"mode={mode}&conversationMetadata=userId=alice&conversationMetadata=userId=bob"));
            // With a conversation id as well, both must hold.
            Assert.Empty(await Conversations($"mode={mode}&conversationId={bob}&conversationMetadata=userId=alice"));
            Assert.Equal([bob], await Conversations($"mode={mode}&conversationId={bob}&conversationMetadata=userId=bob"));
        }

        // The filter reads the conversations as they are now: a metadata change applies to the next search.
        (await client.PatchJson($"/api/conversations/{bob}", new { metadata = new Dictionary<string, string?> { ["userId"] = "alice" } })).EnsureSuccessStatusCode();
        Assert.Equal(new[] { aliceWeb, aliceMobile, bob }.Order(), await Conversations("conversationMetadata=userId=alice"));
        var web = await (await client.GetAsync("/api/search?q=lighthouse&mode=keyword&conversationMetadata=userId=alice&conversationMetadata=channel=web"))
            .ReadAs<SearchResult>(HttpStatusCode.OK);
        Assert.Equal([1L, 2L], web.Hits.Select(h => h.Sequence!.Value).Order()); // both of aliceWeb's messages
    }

    [Fact]
    public async Task A_conversation_metadata_filter_that_matches_too_many_conversations_answers_422()
    {
        var user = ModularChatApp.NewUser();
        using var client = app.Client(user);
        foreach (var title in new[] { "one", "two" })
        {
            (await client.PostJson("/api/conversations", new { title, metadata = new { userId = "alice" } })).EnsureSuccessStatusCode();
        }

        await using var node = await app.StartSearchOnlyNodeAsync(new Dictionary<string, string?> { ["Search:MaxFilteredConversations"] = "1" });
        using var limited = node.Server.CreateClient();
        limited.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));

        var problem = await (await limited.GetAsync("/api/search?q=anything&conversationMetadata=userId=alice")).ShouldBeProblem(422);

        Assert.Contains("Search:MaxFilteredConversations", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        (await limited.GetAsync("/api/search?q=anything&conversationMetadata=userId=bob")).EnsureSuccessStatusCode();
    }

    [Fact]
    public async Task Results_only_ever_come_from_the_callers_tenant()
    {
        var aliceSubject = ModularChatApp.NewUser("alice");
        using var alice = app.Client(aliceSubject);
        using var bob = app.Client(ModularChatApp.NewUser("bob"));
        var alices = await alice.StartConversation("secret", Message("the launch code is pineapple"));
        var bobs = await bob.StartConversation("secret", Message("the launch code is pineapple"));
        await alice.WaitForIndexing(1);
        await bob.WaitForIndexing(1);

        foreach (var mode in new[] { "hybrid", "keyword", "semantic" })
        {
            var hits = (await (await alice.GetAsync($"/api/search?q=launch+code+pineapple&mode={mode}")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
            Assert.Equal([alices], hits.Select(h => h.ConversationId));
            var across = await (await alice.GetAsync($"/api/search?q=pineapple&mode={mode}&conversationId={bobs}")).ReadAs<SearchResult>(HttpStatusCode.OK);
            Assert.Empty(across.Hits);
        }

        // The same tenant claim on two subjects shares data (alice's tenant is her subject); a different tenant claim does not.
        using var colleague = app.Client(ModularChatApp.NewUser("carol"), tenant: aliceSubject);
        Assert.Equal([alices], (await colleague.Search("pineapple")).Hits.Select(h => h.ConversationId));
        using var stranger = app.Client(ModularChatApp.NewUser("dave"), tenant: "acme-" + Guid.NewGuid());
        Assert.Empty((await stranger.Search("pineapple")).Hits);
        await (await alice.GetAsync($"/api/conversations/{bobs}/related")).ShouldBeProblem(404);
    }

    [Fact]
    public async Task The_month_a_message_was_written_in_is_searchable()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("picnics",
            Message("We had a picnic by the lake.", externalId: "march", createdAt: new DateTimeOffset(2024, 3, 10, 12, 0, 0, TimeSpan.Zero)),
            Message("We had a picnic by the lake.", externalId: "june", createdAt: new DateTimeOffset(2024, 6, 10, 12, 0, 0, TimeSpan.Zero)));
        await client.WaitForIndexing(2);

        foreach (var mode in new[] { "keyword", "semantic", "hybrid" })
        {
            var hits = (await (await client.GetAsync($"/api/search?q=picnic+in+June+2024&mode={mode}")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
            Assert.Equal("june", hits[0].ExternalId);
        }
    }

    [Fact]
    public async Task A_recent_message_outranks_an_equally_relevant_old_one()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var now = DateTimeOffset.UtcNow;
        await client.StartConversation("old", Message("the quarterly budget review", externalId: "old", createdAt: now.AddYears(-2)));
        await client.StartConversation("new", Message("the quarterly budget review", externalId: "new", createdAt: now.AddHours(-1)));
        await client.WaitForIndexing(2);

        var hits = (await client.Search("quarterly+budget+review")).Hits;

        Assert.Equal(["new", "old"], hits.Select(h => h.ExternalId));
        Assert.True(hits[0].Score > hits[1].Score);
    }

    [Fact]
    public async Task Over_the_candidate_budget_keyword_search_scores_the_best_entries_not_the_first_stored()
    {
        // A node that scores at most 3 keyword candidates per search, and ranks by BM25 alone (no share of neighbouring
        // turns), so the best entries for one word are its shortest messages.
        await using var node = await app.StartSearchOnlyNodeAsync(new Dictionary<string, string?>
        {
            ["Search:MaxKeywordCandidates"] = "3",
            ["Search:PreviousTurnWeight"] = "0",
            ["Search:NextTurnWeight"] = "0",
        });
        var user = ModularChatApp.NewUser();
        using var writer = app.Client(user);
        using var reader = node.Server.CreateClient();
        reader.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));
        string[] filler = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
        // Longest first: the three best-scoring messages are the last ones stored.
        var messages = Enumerable.Range(0, 8)
            .Select(i => Message(string.Join(' ', filler.Take(8 - i).Prepend("marmalade")), externalId: $"words-{9 - i}"))
            .ToArray();
        await writer.StartConversation("breakfast", messages);
        await writer.WaitForIndexing(8);

        var hits = (await reader.Search("marmalade&mode=keyword&k=3")).Hits;

        Assert.Equal(["words-2", "words-3", "words-4"], hits.Select(h => h.ExternalId));
    }

    [Theory]
    [InlineData("role=user")]
    [InlineData("metadata=src%3Dsingle")]
    [InlineData("to=2023-12-31T00:00:00Z")]
    public async Task A_keyword_match_that_fits_the_filters_is_found_however_many_better_matches_do_not_fit_them(string filter)
    {
        // A node that scores at most 3 keyword candidates per search: the 8 short assistant turns outscore the long
        // user message, which alone fits the filter.
        await using var node = await app.StartSearchOnlyNodeAsync(new Dictionary<string, string?> { ["Search:MaxKeywordCandidates"] = "3" });
        var user = ModularChatApp.NewUser();
        using var writer = app.Client(user);
        using var reader = node.Server.CreateClient();
        reader.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", app.Token(user));
        await writer.StartConversation("stand", Enumerable.Range(0, 8).Select(i => Message($"banana {i}", role: "assistant")).ToArray());
        await writer.StartConversation("bakery", Message(
            "Yesterday I finally baked the banana bread my grandmother wrote down years ago, with walnuts and cinnamon on top",
            externalId: "single", metadata: new { src = "single" }, createdAt: new DateTimeOffset(2023, 1, 15, 12, 0, 0, TimeSpan.Zero)));
        await writer.WaitForIndexing(9);
        Assert.DoesNotContain((await reader.Search("banana&mode=keyword")).Hits, h => h.ExternalId == "single");

        var hits = (await reader.Search("banana&mode=keyword&" + filter)).Hits;

        Assert.Equal(["single"], hits.Select(h => h.ExternalId));
    }

    [Fact]
    public async Task Diversity_makes_room_for_a_different_hit_among_near_duplicates()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await client.StartConversation("dupes",
            Message("Reminder: the dentist appointment is on Monday at nine.", externalId: "a"),
            Message("Reminder: the dentist appointment is on Monday at nine!", externalId: "b"),
            Message("Reminder: the dentist appointment is on Monday at nine.", externalId: "c"),
            Message("The dentist said my appointment could move to Friday.", externalId: "d"));
        await client.WaitForIndexing(4);

        var plain = (await (await client.GetAsync("/api/search?q=dentist+appointment+Monday&k=2")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;
        var diverse = (await (await client.GetAsync("/api/search?q=dentist+appointment+Monday&k=2&diversity=0.7")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits;

        Assert.DoesNotContain(plain, h => h.ExternalId == "d");
        Assert.Contains(diverse, h => h.ExternalId == "d");
    }

    [Theory]
    [InlineData("", 400, "q")]
    [InlineData("q=%20%20", 400, "q")]
    [InlineData("q=%00", 400, "q")] // only what is dropped (before: 200, a search for nothing)
    [InlineData("q=%00%20%00", 400, "q")]
    [InlineData("q=x&k=0", 400, "k")]
    [InlineData("q=x&k=51", 422, "k")]
    [InlineData("q=x&k=ten", 400, null)]
    [InlineData("q=x&scope=everything", 400, "scope")]
    [InlineData("q=x&mode=fuzzy", 400, "mode")]
    [InlineData("q=x&mode=3", 400, "mode")] // a number: no mode of that value exists
    [InlineData("q=x&mode=keyword&mode=semantic", 400, "mode")] // sent twice ("keyword,semantic"), once read as a third mode
    [InlineData("q=x&scope=messages,summaries", 400, "scope")]
    [InlineData("q=x&scope=1", 400, "scope")]
    [InlineData("q=x&role=robot", 400, "role")]
    [InlineData("q=x&conversationId=not-a-guid", 400, null)]
    [InlineData("q=x&from=yesterday", 400, null)]
    [InlineData("q=x&from=2024-02-01&to=2024-01-01", 400, "to")]
    [InlineData("q=x&metadata=speaker", 400, "metadata[0]")]
    [InlineData("q=x&conversationMetadata=userId", 400, "conversationMetadata[0]")]
    [InlineData("q=x&conversationMetadata=userId=a%00b", 400, "conversationMetadata[0]")]
    [InlineData("q=x&diversity=2", 400, "diversity")]
    [InlineData("q=x&context=6", 422, "context")]
    [InlineData("q=pizza&q=pasta", 400, "q")] // before: a search for "pizza,pasta"
    public async Task Bad_search_requests_get_a_problem_naming_the_parameter(string query, int status, string? field)
    {
        using var client = app.Client(ModularChatApp.NewUser());
        var problem = await (await client.GetAsync("/api/search?" + query)).ShouldBeProblem(status);
        if (field is not null)
        {
            Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), problem.ToString());
        }
    }

    [Fact]
    public async Task Odd_queries_are_answered_without_errors_and_over_long_ones_are_refused()
    {
        using var client = app.Client(ModularChatApp.NewUser());
        await (await client.GetAsync("/api/search?q=" + new string('a', 201))).ShouldBeProblem(422);
        await client.StartConversation("words", Message("an ordinary sentence"));
        await client.WaitForIndexing(1);
        var result = await (await client.GetAsync("/api/search?q=the+and+of&mode=keyword")).ReadAs<SearchResult>(HttpStatusCode.OK);
        Assert.Empty(result.Hits);
        Assert.Empty((await (await client.GetAsync("/api/search?q=%3F%21&mode=semantic")).ReadAs<SearchResult>(HttpStatusCode.OK)).Hits);
        // Characters PostgreSQL cannot store are not an error.
        var nul = await (await client.GetAsync("/api/search?q=ordinary%00sentence&metadata=k%00=v%00")).ReadAs<SearchResult>(HttpStatusCode.OK);
        Assert.Empty(nul.Hits);
        Assert.NotEmpty((await client.Search("ordinary%00sentence")).Hits);
        await (await app.Host.Server.CreateClient().GetAsync("/api/search?q=x")).ShouldBeProblem(401);
    }
}
