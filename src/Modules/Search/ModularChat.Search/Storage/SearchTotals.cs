using System.Data.Common;
using Weasel.Core;
using Weasel.Postgresql;
using DbCommandBuilder = Weasel.Core.DbCommandBuilder;

namespace ModularChat.Search.Storage;

/// <summary>
/// The table of each tenant's BM25 collection statistics per kind (<see cref="SearchSchema.Totals"/>: the sums of
/// <see cref="SearchSchema.Stats"/>' rows of one tenant and kind) and the triggers on the statistics that keep it equal to
/// those sums, whatever writes them: indexing, a deleted conversation, retention, a rebuild's teardown.
/// </summary>
/// <remarks>
/// <para>
/// A keyword search needs the tenant's entry count and average length. Added up from the per-conversation rows, that
/// read every conversation's row per search (~20-80 ms at 100,000 conversations, by the machine's load); this is one
/// probe per kind. The per-conversation rows stay: a search within some conversations reads theirs.
/// </para>
/// <para>
/// Triggers rather than one more statement beside each writer: a node of an older build in a rolling upgrade writes the
/// statistics without knowing this table, and the totals still follow. Each writer of a tenant's statistics already
/// holds the tenant's term lock (<c>SearchRemovals.LockTenantTerms</c>), so the hot row of a tenant and kind is updated
/// by one transaction at a time, as the term counts are. The triggers run once per statement, over its transition
/// tables, so an indexing page that touches many conversations costs one update per kind.
/// </para>
/// <para>
/// Created, or brought to <see cref="Version"/>, by one statement (a <c>DO</c> block, atomic on its own) that locks the
/// statistics against writers, (re)creates the functions and triggers and fills the totals from the statistics: a
/// deployment upgraded from a build without them starts with true totals, none counted twice or missed. Changing the
/// triggers means changing <see cref="Version"/>, which the schema check compares with the table's comment.
/// </para>
/// </remarks>
internal sealed class SearchTotals(SearchSchema schema, int fillFactor) : ISchemaObject
{
    /// <summary>The definition's version, kept as the table's comment.</summary>
    public const string Version = "mc_search_totals v1";

    private const string TableName = "mc_search_totals";
    // Each trigger runs the function of its name, after each statement of its event on the statistics.
    private static readonly (string Name, string Event, string TransitionTables)[] Triggers =
    [
        ("mc_search_totals_added", "insert", "referencing new table as added_rows"),
        ("mc_search_totals_changed", "update", "referencing old table as old_rows new table as new_rows"),
        ("mc_search_totals_removed", "delete", "referencing old table as removed_rows"),
        ("mc_search_totals_truncated", "truncate", ""),
    ];

    public DbObjectName Identifier { get; } = new PostgresqlObjectName(schema.Schema, TableName, SchemaUtils.IdentifierUsage.General);

    public void WriteCreateStatement(Migrator migrator, TextWriter writer) => writer.WriteLine(CreateSql());

    /// <summary>The one statement that creates the table, its functions and triggers, and fills it (see the remarks).</summary>
    internal string CreateSql()
    {
        var s = schema.Schema;
        var (stats, totals) = (schema.Stats, schema.Totals);
        const string Sums = "sum(documents)::bigint as documents, sum(lexemes)::bigint as lexemes";
        const string Add = "documents = t.documents + excluded.documents, lexemes = t.lexemes + excluded.lexemes";
        var triggers = string.Join('\n', Triggers.Select(t => $"""
              drop trigger if exists {t.Name} on {stats};
              create trigger {t.Name} after {t.Event} on {stats} {t.TransitionTables} for each statement execute function {s}.{t.Name}();
            """));
        return $$"""
            do $mc_totals$
            begin
              -- Writers of the statistics wait until the totals are filled and the triggers count their changes.
              lock table {{stats}} in share row exclusive mode;
              create table if not exists {{totals}} (
                tenant_id varchar not null,
                kind smallint not null,
                documents bigint not null,
                lexemes bigint not null,
                primary key (tenant_id, kind)
              ) with (fillfactor = {{fillFactor}});

              create or replace function {{s}}.mc_search_totals_added() returns trigger language plpgsql as $f$
              begin
                insert into {{totals}} as t (tenant_id, kind, documents, lexemes)
                select tenant_id, kind, {{Sums}} from added_rows group by tenant_id, kind order by tenant_id, kind
                on conflict (tenant_id, kind) do update set {{Add}};
                return null;
              end $f$;

              create or replace function {{s}}.mc_search_totals_changed() returns trigger language plpgsql as $f$
              begin
                insert into {{totals}} as t (tenant_id, kind, documents, lexemes)
                select tenant_id, kind, {{Sums}}
                from (select tenant_id, kind, documents, lexemes from new_rows
                      union all select tenant_id, kind, -documents, -lexemes from old_rows) d
                group by tenant_id, kind order by tenant_id, kind
                on conflict (tenant_id, kind) do update set {{Add}};
                return null;
              end $f$;

              -- A tenant and kind left without entries has no totals row (a tenant's last conversation deleted leaves nothing).
              create or replace function {{s}}.mc_search_totals_removed() returns trigger language plpgsql as $f$
              begin
                update {{totals}} t set documents = t.documents - r.documents, lexemes = t.lexemes - r.lexemes
                from (select tenant_id, kind, {{Sums}} from removed_rows group by tenant_id, kind) r
                where t.tenant_id = r.tenant_id and t.kind = r.kind;
                delete from {{totals}} t
                using (select distinct tenant_id, kind from removed_rows) r
                where t.tenant_id = r.tenant_id and t.kind = r.kind and t.documents <= 0;
                return null;
              end $f$;

              create or replace function {{s}}.mc_search_totals_truncated() returns trigger language plpgsql as $f$
              begin
                delete from {{totals}};
                return null;
              end $f$;

            {{triggers}}

              delete from {{totals}};
              insert into {{totals}} (tenant_id, kind, documents, lexemes)
              select tenant_id, kind, {{Sums}} from {{stats}} group by tenant_id, kind;
              comment on table {{totals}} is '{{Version}}';
            end
            $mc_totals$;
            """;
    }

    public void WriteDropStatement(Migrator rules, TextWriter writer)
    {
        foreach (var (name, _, _) in Triggers)
        {
            writer.WriteLine($"drop trigger if exists {name} on {schema.Stats};");
            writer.WriteLine($"drop function if exists {schema.Schema}.{name}();");
        }

        writer.WriteLine($"drop table if exists {schema.Totals};");
    }

    /// <summary>One row when the table is at <see cref="Version"/> and every trigger is in place.</summary>
    public void ConfigureQueryCommand(DbCommandBuilder builder)
    {
        builder.Append("select 1 where obj_description(to_regclass(");
        builder.AppendParameter(schema.Totals);
        builder.Append("), 'pg_class') = ");
        builder.AppendParameter(Version);
        builder.Append(" and (select count(*) from pg_trigger where tgrelid = to_regclass(");
        builder.AppendParameter(schema.Stats);
        builder.Append(") and tgname = any(");
        builder.AppendParameter(Triggers.Select(t => t.Name).ToArray());
        builder.Append($")) = {Triggers.Length};");
    }

    public async Task<ISchemaObjectDelta> CreateDeltaAsync(DbDataReader reader, CancellationToken ct = default)
        => new SchemaObjectDelta(this, await reader.ReadAsync(ct) ? SchemaPatchDifference.None : SchemaPatchDifference.Create);

    public IEnumerable<DbObjectName> AllNames()
    {
        yield return Identifier;
    }
}
