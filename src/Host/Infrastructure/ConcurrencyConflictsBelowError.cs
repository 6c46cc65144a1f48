using JasperFx;
using JasperFx.Events;
using ExistingStreamIdCollisionException = Marten.Exceptions.ExistingStreamIdCollisionException;
using Marten;
using Marten.Exceptions;
using Marten.Services;
using Npgsql;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// Marten's command log as Marten writes it, except that a command failed by a concurrency conflict is logged at Debug
/// instead of Error: a stream's expected version, a document's version, or a new document or stream another writer stored
/// first. Those are routine (two nodes updating the same conversation, a client's expectedVersion): the code that catches
/// the exception decides what they mean (a retry, a 409), and Wolverine logs a handler's failure at the handler's level.
/// </summary>
internal sealed partial class ConcurrencyConflictsBelowError(IMartenLogger inner, ILogger logger) : IMartenLogger
{
    public IMartenSessionLogger StartSession(IQuerySession session) => new SessionLogger(inner.StartSession(session), logger);

    public void SchemaChange(string sql) => inner.SchemaChange(sql);

    /// <summary>Whether <paramref name="e"/> (as Npgsql threw it, or as Marten translated it) is a lost optimistic-concurrency race.</summary>
    internal static bool IsConflict(Exception e) => e switch
    {
        ConcurrencyException or ConcurrentUpdateException or EventStreamUnexpectedMaxEventIdException
            or ExistingStreamIdCollisionException or JasperFx.Events.ExistingStreamIdCollisionException or DocumentAlreadyExistsException => true,
        // MT003: Marten's quick append found another stream version than the expected one.
        PostgresException p => p.SqlState is "MT003" or PostgresErrorCodes.SerializationFailure
            || (p.SqlState == PostgresErrorCodes.UniqueViolation
                && (p.TableName?.StartsWith("mt_streams", StringComparison.Ordinal) == true
                    || p.TableName == "mt_events"
                    || p.ConstraintName?.StartsWith("pkey_mt_doc_", StringComparison.Ordinal) == true)),
        AggregateException a => a.InnerExceptions.Count > 0 && a.InnerExceptions.All(IsConflict),
        MartenCommandException { InnerException: { } cause } => IsConflict(cause),
        _ => false,
    };

    private sealed class SessionLogger(IMartenSessionLogger inner, ILogger logger) : IMartenSessionLogger
    {
        public void LogSuccess(NpgsqlCommand command) => inner.LogSuccess(command);

        public void LogSuccess(NpgsqlBatch batch) => inner.LogSuccess(batch);

        public void LogFailure(NpgsqlCommand command, Exception ex)
            => Log(ex, () => command.CommandText, () => inner.LogFailure(command, ex));

        public void LogFailure(NpgsqlBatch batch, Exception ex)
            => Log(ex, () => string.Join(";\n", batch.BatchCommands.Cast<NpgsqlBatchCommand>().Select(c => c.CommandText)), () => inner.LogFailure(batch, ex));

        public void LogFailure(Exception ex, string message) => Log(ex, () => message, () => inner.LogFailure(ex, message));

        /// <summary>A lost race at Debug with what was sent; any other failure as Marten logs it.</summary>
        private void Log(Exception ex, Func<string> sent, Action asMartenLogsIt)
        {
            if (IsConflict(ex))
            {
                LogConflict(logger, ex, sent());
            }
            else
            {
                asMartenLogsIt();
            }
        }

        public void RecordSavedChanges(IDocumentSession session, IChangeSet commit) => inner.RecordSavedChanges(session, commit);

        public void OnBeforeExecute(NpgsqlCommand command) => inner.OnBeforeExecute(command);

        public void OnBeforeExecute(NpgsqlBatch batch) => inner.OnBeforeExecute(batch);
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Marten command lost a concurrency race (the caller retries or reports it):\n{SQL}")]
    private static partial void LogConflict(ILogger logger, Exception exception, string sql);
}
