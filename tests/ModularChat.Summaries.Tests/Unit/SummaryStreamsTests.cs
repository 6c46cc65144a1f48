using ModularChat.Summaries.Domain;

namespace ModularChat.Summaries.Tests.Unit;

public sealed class SummaryStreamsTests
{
    [Fact]
    public void A_summary_stream_id_is_deterministic_and_never_the_conversation_id()
    {
        var conversation = Guid.CreateVersion7();
        var stream = SummaryStreams.For(conversation);

        Assert.Equal(stream, SummaryStreams.For(conversation));
        Assert.NotEqual(conversation, stream);
        Assert.NotEqual(stream, SummaryStreams.For(Guid.CreateVersion7()));
        Assert.Equal(5, stream.Version);
    }

    [Fact]
    public void The_derivation_is_a_standard_name_based_uuid_that_never_changes()
        // Computed independently (RFC 4122 version 5: SHA-1 of the namespace and the conversation id, big-endian).
        => Assert.Equal(new Guid("5f987758-5f39-5a23-a02a-9b87c48c59f3"), SummaryStreams.For(new Guid("0195f3a0-0000-7000-8000-000000000001")));
}
