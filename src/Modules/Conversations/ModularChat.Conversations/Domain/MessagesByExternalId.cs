using Weasel.Postgresql;
using Weasel.Postgresql.Functions;

namespace ModularChat.Conversations.Domain;

/// <summary>
/// The idempotency lookup of appends: the stored messages of a conversation that hold any of a list of external ids,
/// found by one probe of the unique (tenant, conversation, external id) index per id, and for an id no hot message holds,
/// one probe of the keys of the messages retention archived or deleted (<see cref="RetiredExternalId"/>).
/// </summary>
/// <remarks>
/// A single statement of the form <c>external_id = any($3)</c> is not safe here. Npgsql prepares it, and PostgreSQL's
/// generic plan cannot know how many ids the array holds nor how many messages this conversation has (it estimates a
/// conversation of average size): it reads all of the conversation's messages through the index prefix and compares
/// each with every id of the array, which costs messages x ids (seen: 0.8 s for 1,000 ids in a 60,000-message
/// conversation, growing with every batch of an import). The function runs one equality statement per id instead; the
/// generic plan of an equality on every column of a unique index is one probe whatever the statistics say
/// (<c>ExternalIdLookupTests</c> checks it), so the lookup costs ids x log(messages).
/// <para>
/// The tenant and the conversation are hidden from the planner behind sub-selects. PL/pgSQL plans the first calls with
/// the values, and a tenant or conversation new since the last ANALYZE (a tenant importing its history) is estimated at
/// a row or two: the primary key (tenant, id) or the (tenant, conversation, sequence) index then cost the same as the
/// unique index, and PostgreSQL may take one of them and filter, reading the tenant's or the conversation's every
/// message per id. Seen under the benchmark's long batch runs: while one 1,000-id lookup ran past the 30 s command
/// timeout, the unique index saw no scans and the primary key 10.7 million entries read, and the append answered 503.
/// Behind a sub-select a value is estimated from the column's number of distinct values, and only the unique index
/// stays cheap.
/// </para>
/// </remarks>
public static class MessagesByExternalId
{
    public const string FunctionName = "mc_messages_by_external_id";

    /// <summary>The statement the function runs once per id ($1 tenant, $2 conversation, $3 external id).</summary>
    public static string ProbeSql(string schema) =>
        $"select d.data from {schema}.mt_doc_storedmessage d where d.tenant_id = (select $1::varchar) and d.conversation_id = (select $2::uuid) and d.external_id = $3";

    /// <summary>
    /// The same probe of the idempotency keys retention kept for messages it took out of the hot table
    /// (<see cref="RetiredExternalId"/>, whose JSON reads as a stored message's); run only for ids the first probe missed, and
    /// only when the conversation has any (one probe per call finds out: most conversations never had retention).
    /// </summary>
    public static string RetiredProbeSql(string schema) =>
        $"select d.data from {schema}.mt_doc_retiredexternalid d where d.tenant_id = (select $1::varchar) and d.conversation_id = (select $2::uuid) and d.external_id = $3";

    /// <summary>The call a batch query sends: Marten reads the single <c>data</c> column as the document.</summary>
    public static string CallSql(string schema) => $"select m.data from {schema}.{FunctionName}(?::varchar, ?::uuid, ?::varchar[]) as m(data)";

    /// <summary>The function, created and kept up to date with Marten's other schema objects.</summary>
    public static Function Create(string schema)
    {
        // Written as pg_get_functiondef prints it, so schema comparison finds nothing to change on the next start.
        static string Parameterized(string sql) => sql.Replace("$1", "p_tenant", StringComparison.Ordinal)
            .Replace("$2", "p_conversation", StringComparison.Ordinal).Replace("$3", "p_external_id", StringComparison.Ordinal);
        var probe = Parameterized(ProbeSql(schema));
        var retired = Parameterized(RetiredProbeSql(schema));
        var anyRetired = Parameterized($"select 1 from {schema}.mt_doc_retiredexternalid d where d.tenant_id = (select $1::varchar) and d.conversation_id = (select $2::uuid)");
        var body = $"""
            CREATE OR REPLACE FUNCTION {schema}.{FunctionName}(p_tenant character varying, p_conversation uuid, p_external_ids character varying[])
             RETURNS SETOF jsonb
             LANGUAGE plpgsql
             STABLE
            AS $function$
            declare
              p_external_id character varying;
              p_has_retired boolean := exists ({anyRetired});
            begin
              foreach p_external_id in array p_external_ids loop
                return query {probe};
                if not found and p_has_retired then
                  return query {retired};
                end if;
              end loop;
            end
            $function$;
            """;
        return new Function(new PostgresqlObjectName(schema, FunctionName, SchemaUtils.IdentifierUsage.Function), body);
    }
}
