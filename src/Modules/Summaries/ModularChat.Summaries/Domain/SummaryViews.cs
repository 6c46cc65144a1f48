using JasperFx.Events;
using Marten;
using Marten.Events.Projections;
using ModularChat.Summaries.Contracts;

namespace ModularChat.Summaries.Domain;

/// <summary>A conversation's current summary (the latest revision). Id = the conversation id.</summary>
public sealed record SummaryView
{
    public Guid Id { get; init; }

    public int Revision { get; init; }

    public string Text { get; init; } = "";

    public long FromSequence { get; init; }

    public long ToSequence { get; init; }

    public string Reason { get; init; } = "";

    public string Summarizer { get; init; } = "";

    public string Model { get; init; } = "";

    public string PromptVersion { get; init; } = "";

    public string Variant { get; init; } = "";

    public int InputTokens { get; init; }

    public int OutputTokens { get; init; }

    public TimeSpan Duration { get; init; }

    public DateTimeOffset RevisedAt { get; init; }

    /// <inheritdoc cref="SummaryRevised.BasedOnRevision"/>
    public int? BasedOnRevision { get; init; }

    /// <inheritdoc cref="SummaryRevised.ReadFromSequence"/>
    public long? ReadFromSequence { get; init; }

    public static SummaryView From(SummaryRevised e) => new()
    {
        Id = e.ConversationId,
        Revision = e.Revision,
        Text = e.Text,
        FromSequence = e.FromSequence,
        ToSequence = e.ToSequence,
        Reason = e.Reason,
        Summarizer = e.Summarizer,
        Model = e.Model,
        PromptVersion = e.PromptVersion,
        Variant = e.Variant,
        InputTokens = e.InputTokens,
        OutputTokens = e.OutputTokens,
        Duration = e.Duration,
        RevisedAt = e.RevisedAt,
        BasedOnRevision = e.BasedOnRevision,
        ReadFromSequence = e.ReadFromSequence,
    };
}

/// <summary>One revision of a conversation's summary, for the history. Id = the revision's event id.</summary>
public sealed record SummaryRevisionView
{
    public Guid Id { get; init; }

    public Guid ConversationId { get; init; }

    public int Revision { get; init; }

    public SummaryView Summary { get; init; } = new();
}

/// <summary>Keeps the current summary and the history, inline with each <see cref="SummaryRevised"/>.</summary>
public sealed partial class SummaryViewsProjection : EventProjection
{
    public void Project(IEvent<SummaryRevised> e, IDocumentOperations operations)
    {
        var view = SummaryView.From(e.Data);
        operations.Store(view);
        operations.Store(new SummaryRevisionView { Id = e.Id, ConversationId = e.Data.ConversationId, Revision = e.Data.Revision, Summary = view });
    }
}
