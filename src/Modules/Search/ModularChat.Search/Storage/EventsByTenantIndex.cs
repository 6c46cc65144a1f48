using System.Data.Common;
using Weasel.Core;
using Weasel.Core.Migrations;
using Weasel.Postgresql;
using DbCommandBuilder = Weasel.Core.DbCommandBuilder;

namespace ModularChat.Search.Storage;

/// <summary>
/// An index of Marten's event table by tenant and sequence, so that the search status counts the events of one tenant
/// that the projection has not read (<c>GetSearchStatusHandler.Command</c>) by walking that tenant's part of it alone.
/// Without it the only way there was the table's primary key (the sequence, all tenants together): every status call
/// of every tenant read all the events still unread, another tenant's import of hundreds of thousands included.
/// </summary>
/// <remarks>
/// Marten owns <c>mt_events</c> and drops indexes it did not declare, so the store is told to leave this one alone
/// (<see cref="Name"/> goes to <c>StoreOptions.Events.IgnoreIndex</c>) and it is created by a feature of its own
/// (<see cref="EventsByTenantIndexFeature"/>): Marten creates such features after the event tables, where it creates the
/// search tables (<c>ExtendedSchemaObjects</c>) before them, which failed on a new database.
/// </remarks>
internal sealed class EventsByTenantIndex(string eventsSchema) : ISchemaObject
{
    public const string Name = "ix_mc_events_tenant_seq";

    public DbObjectName Identifier { get; } = new PostgresqlObjectName(eventsSchema, Name, SchemaUtils.IdentifierUsage.General);

    public void WriteCreateStatement(Migrator migrator, TextWriter writer)
        => writer.WriteLine($"create index if not exists {Name} on {eventsSchema}.mt_events (tenant_id, seq_id);");

    public void WriteDropStatement(Migrator rules, TextWriter writer)
        => writer.WriteLine($"drop index if exists {eventsSchema}.{Name};");

    public void ConfigureQueryCommand(DbCommandBuilder builder)
    {
        builder.Append("select indexname from pg_indexes where schemaname = ");
        builder.AppendParameter(eventsSchema);
        builder.Append(" and indexname = ");
        builder.AppendParameter(Name);
        builder.Append(";");
    }

    public async Task<ISchemaObjectDelta> CreateDeltaAsync(DbDataReader reader, CancellationToken ct = default)
        => new SchemaObjectDelta(this, await reader.ReadAsync(ct) ? SchemaPatchDifference.None : SchemaPatchDifference.Create);

    public IEnumerable<DbObjectName> AllNames()
    {
        yield return Identifier;
    }
}

/// <summary>Creates <see cref="EventsByTenantIndex"/> once Marten has created its event tables.</summary>
internal sealed class EventsByTenantIndexFeature(string eventsSchema, Migrator migrator) : FeatureSchemaBase("SearchEventsByTenant", migrator)
{
    protected override IEnumerable<ISchemaObject> schemaObjects()
    {
        yield return new EventsByTenantIndex(eventsSchema);
    }
}
