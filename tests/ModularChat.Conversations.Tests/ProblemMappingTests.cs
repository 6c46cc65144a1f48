using ModularChat.BuildingBlocks.Errors;
using Npgsql;

namespace ModularChat.Conversations.Tests;

/// <summary>Exceptions that reach the HTTP pipeline map to the status that names the problem.</summary>
public sealed class ProblemMappingTests
{
    [Theory]
    [InlineData(PostgresErrorCodes.UntranslatableCharacter)] // 22P05: "\u0000" inside jsonb
    [InlineData(PostgresErrorCodes.CharacterNotInRepertoire)] // 22021: a NUL byte in a text parameter
    public void Text_PostgreSQL_cannot_store_answers_400_at_any_depth_not_500(string sqlState)
    {
        var database = new PostgresException("cannot store it", "ERROR", "ERROR", sqlState);

        var problem = ProblemDetailsExceptionHandler.Map(new InvalidOperationException("Marten Command Failure", database));

        Assert.Equal(400, problem.Status);
        Assert.Contains("NUL character", problem.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void A_lost_optimistic_concurrency_race_answers_409_also_as_marten_wraps_it()
    {
        // Marten throws the ConcurrencyException of a versioned document inside an AggregateException of the batch.
        var problem = ProblemDetailsExceptionHandler.Map(new AggregateException(new JasperFx.ConcurrencyException(typeof(object), Guid.NewGuid())));

        Assert.Equal(409, problem.Status);
    }

    [Fact]
    public void Any_other_database_error_is_still_a_500()
    {
        var problem = ProblemDetailsExceptionHandler.Map(new PostgresException("division by zero", "ERROR", "ERROR", PostgresErrorCodes.DivisionByZero));

        Assert.Equal(500, problem.Status);
    }
}
