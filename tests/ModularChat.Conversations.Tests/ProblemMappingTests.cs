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

    [Theory]
    [InlineData(400, "chunked encoding is malformed")] // Kestrel: "Bad chunk size data.", "Unexpected end of request content."
    [InlineData(408, "did not arrive in time")] // Kestrel: a body slower than MinRequestBodyDataRate
    public void A_body_the_web_server_could_not_finish_reading_answers_a_problem_saying_why(int status, string said)
    {
        // Kestrel answers these with the status only (a bare 400 or 408), which the status code page wrote with its title
        // alone ("Bad Request", "Request Timeout"). Seen against Kestrel: a chunk size that is not hexadecimal, a body
        // announced longer than it is.
        var context = new ProblemDetailsContext { HttpContext = new DefaultHttpContext(), ProblemDetails = { Status = status } };

        StatusCodeProblems.AddDetail(context);

        Assert.Contains(said, context.ProblemDetails.Detail, StringComparison.Ordinal);
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
