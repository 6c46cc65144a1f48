using Marten;
using Npgsql;
using NpgsqlTypes;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>What chooses rows of Wolverine's dead-letter table; null matches any.</summary>
/// <param name="MessageType">Wolverine's name of the message type (its full .NET name here), exactly.</param>
/// <param name="ExceptionType">The full .NET name of the exception that made it fail, exactly.</param>
/// <param name="Tenant">The tenant the message was sent for (the envelope's tenant header), exactly.</param>
/// <param name="BodyContains">
/// Text the stored envelope contains (UTF-8): its headers and the serialized message. A superset of the letters it names:
/// the caller reads those and checks them.
/// </param>
public sealed record DeadLetterCriteria(string? MessageType = null, string? ExceptionType = null, string? Tenant = null, string? BodyContains = null);

/// <summary>Where a dead letter stands in failure order: when it failed (else when it was sent), then its id.</summary>
public readonly record struct DeadLetterPosition(DateTimeOffset At, Guid Id);

/// <summary>
/// Finds rows of Wolverine's dead-letter table (<c>wolverine_dead_letters</c>, in the store's schema) by what its columns
/// hold, in one statement: Wolverine's own query pages by offset (a replay that takes letters out meanwhile makes a walk
/// by pages skip some) and cannot look into the stored envelope, which is the only place that holds the tenant (the
/// table has no tenant column). The letters themselves are read through Wolverine (<c>IDeadLetters</c>).
/// </summary>
public static class DeadLetterRows
{
    /// <summary>
    /// The ids and positions of the letters that <paramref name="criteria"/> choose, oldest failure first, those after
    /// <paramref name="after"/> when given, at most <paramref name="limit"/> when given; read at one moment.
    /// </summary>
    public static async Task<IReadOnlyList<DeadLetterPosition>> FindAsync(
        IDocumentStore store, DeadLetterCriteria criteria, DeadLetterPosition? after, int? limit, CancellationToken cancellationToken)
    {
        await using var connection = store.Storage.Database.CreateConnection();
        await connection.OpenAsync(cancellationToken);
        // "at" is never null (failed_at is Wolverine's, sent_at is set for every envelope; the year 1 for a row of neither),
        // so the keyset comparison is total.
        await using var command = new NpgsqlCommand($"""
            select id, at from (
              select id, coalesce(failed_at, sent_at, timestamptz '0001-01-01 00:00:00+00') as at, message_type, exception_type, body
              from {store.Options.DatabaseSchemaName}.wolverine_dead_letters) d
            where ($1::varchar is null or message_type = $1)
              and ($2::varchar is null or exception_type = $2)
              and ($3::bytea is null or position($3 in body) > 0)
              and ($4::bytea is null or position($4 in body) > 0)
              and ($5::timestamptz is null or (at, id) > ($5, $6))
            order by at, id
            limit $7
            """, connection);
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Varchar, Value = (object?)criteria.MessageType ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Varchar, Value = (object?)criteria.ExceptionType ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter
        {
            NpgsqlDbType = NpgsqlDbType.Bytea,
            Value = criteria.BodyContains is { } text ? System.Text.Encoding.UTF8.GetBytes(text) : DBNull.Value,
        });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Bytea, Value = criteria.Tenant is { } t ? TenantHeader(t) : DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.TimestampTz, Value = after is { } a ? a.At : DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Uuid, Value = after is { } b ? b.Id : DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Bigint, Value = limit is { } l ? (long)l : DBNull.Value });
        var found = new List<DeadLetterPosition>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            found.Add(new DeadLetterPosition(reader.GetFieldValue<DateTimeOffset>(1), reader.GetGuid(0)));
        }

        return found;
    }

    /// <summary>
    /// The bytes of an envelope's tenant header as Wolverine stores it (its EnvelopeSerializer writes each header as its key
    /// and its value, each a length-prefixed string of <see cref="BinaryWriter"/>): the value's length prefix makes the match
    /// exact (another tenant whose id starts with this one's does not match), and a serialized message (JSON text, whose
    /// control characters are escaped) cannot hold the key's length byte. The tests would notice a change of the format
    /// (their letters are written by Wolverine): a tenant's letters would no longer be found.
    /// </summary>
    public static byte[] TenantHeader(string tenant)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(Wolverine.EnvelopeConstants.TenantIdKey);
            writer.Write(tenant);
        }

        return stream.ToArray();
    }
}
