using Marten;
using ModularChat.BuildingBlocks.Tenancy;
using Wolverine;
using Wolverine.Marten.Publishing;
using Wolverine.Runtime;

namespace ModularChat.BuildingBlocks.Persistence;

/// <summary>
/// Opens Marten sessions for the current tenant. Write sessions are enrolled in
/// Wolverine's outbox, so the events a command appends are forwarded to Wolverine
/// in the same transaction that stores them (and only if it commits).
/// </summary>
public sealed class TenantSessions(
    IDocumentStore store,
    OutboxedSessionFactory outboxedSessions,
    IMessageBus bus,
    TenantContext tenant)
{
    /// <summary>The tenant the sessions are opened for.</summary>
    public string TenantId => tenant.TenantId;

    /// <summary>A read-only session scoped to the current tenant.</summary>
    public IQuerySession Query() => store.QuerySession(tenant.TenantId);

    /// <summary>A unit-of-work session for the current tenant, enrolled in Wolverine's outbox.</summary>
    public IDocumentSession Write() => outboxedSessions.OpenSession((MessageContext)bus, tenant.TenantId);

    /// <summary>
    /// Publishes <paramref name="message"/> for the current tenant through the outbox of the session <see cref="Write"/>
    /// opened: it is stored when that session commits and delivered after, and never if the session does not commit.
    /// </summary>
    public ValueTask PublishWithWriteAsync<T>(T message) where T : notnull
        => bus.PublishAsync(message, new DeliveryOptions { TenantId = tenant.TenantId });
}
