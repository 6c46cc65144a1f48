using JasperFx;
using Wolverine;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>
/// The <see cref="IDeadLetterReport"/> of one handler's messages of <typeparamref name="TMessage"/>: the module writes its
/// one error (the tenant, the conversation, what was not done, what brings it back) and counts it, in
/// <see cref="Report"/>, with the message typed and the envelope's tenant.
/// </summary>
/// <param name="handlerType">
/// For an event that several modules handle (each handler in its own local queue, named after the handler type, under
/// MultipleHandlerBehavior.Separated): the handler whose queue's envelopes this reports. Null for a message of one handler.
/// </param>
public abstract class DeadLetterReport<TMessage>(Type? handlerType = null) : IDeadLetterReport
    where TMessage : class
{
    /// <summary>The handler's local queue, as Wolverine names it (its type's full name in lower case), or null for any.</summary>
    private readonly string? _queue = handlerType?.FullName?.ToLowerInvariant();

    /// <inheritdoc />
    public Type MessageType => typeof(TMessage);

    /// <inheritdoc />
    public bool Reports(Envelope envelope)
        => envelope.Message?.GetType() == typeof(TMessage)
           && (_queue is null || string.Equals(envelope.Destination?.Host, _queue, StringComparison.OrdinalIgnoreCase));

    /// <inheritdoc />
    public void DeadLettered(Envelope envelope, Exception exception)
        => Report((TMessage)envelope.Message!, envelope.TenantId ?? StorageConstants.DefaultTenantId, exception);

    /// <summary>Logs (one error) and counts <paramref name="message"/> of <paramref name="tenantId"/>, dead-lettered after <paramref name="exception"/>.</summary>
    protected abstract void Report(TMessage message, string tenantId, Exception exception);
}
