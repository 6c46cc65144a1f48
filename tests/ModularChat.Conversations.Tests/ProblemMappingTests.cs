using Microsoft.AspNetCore.Http;
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
    public void Json_the_service_cannot_read_back_is_its_own_fault_not_a_malformed_request()
    {
        // A stored or cached document that no longer reads (the request body's errors arrive wrapped by the binding).
        var stored = ProblemDetailsExceptionHandler.Map(new System.Text.Json.JsonException("'x' is an invalid start of a value.", "$.metadata", 0, 1));
        var body = ProblemDetailsExceptionHandler.Map(new BadHttpRequestException(
            "Failed to read parameter \"NewMessage body\" from the request body as JSON.", new System.Text.Json.JsonException("bad", "$.role", 0, 1)));

        Assert.Equal(500, stored.Status); // before: 400 "The request body is not valid JSON"
        Assert.Equal(400, body.Status);
    }

    [Fact]
    public void Any_other_database_error_is_still_a_500()
    {
        var problem = ProblemDetailsExceptionHandler.Map(new PostgresException("division by zero", "ERROR", "ERROR", PostgresErrorCodes.DivisionByZero));

        Assert.Equal(500, problem.Status);
    }
}
