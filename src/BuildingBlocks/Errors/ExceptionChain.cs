namespace ModularChat.BuildingBlocks.Errors;

/// <summary>Looks through the exceptions a failure wraps: Marten, Wolverine and Npgsql nest the one that tells what happened.</summary>
public static class ExceptionChain
{
    /// <summary>Whether <paramref name="exception"/> or one it wraps (inner exceptions, aggregates) matches.</summary>
    public static bool InChain(this Exception exception, Func<Exception, bool> match)
    {
        for (Exception? e = exception; e is not null; e = e.InnerException)
        {
            if (match(e))
            {
                return true;
            }

            if (e is AggregateException aggregate)
            {
                return aggregate.InnerExceptions.Any(inner => InChain(inner, match));
            }
        }

        return false;
    }
}
