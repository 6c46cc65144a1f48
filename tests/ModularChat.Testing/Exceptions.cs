namespace ModularChat.Testing;

/// <summary>Looking into what a failed host start threw.</summary>
public static class Exceptions
{
    /// <summary><paramref name="e"/>, its inner exceptions and those of every aggregate among them, depth first.</summary>
    public static IEnumerable<Exception> Flatten(Exception e)
    {
        for (var current = e; current is not null; current = current.InnerException)
        {
            yield return current;
            if (current is AggregateException aggregate)
            {
                foreach (var inner in aggregate.InnerExceptions.SelectMany(Flatten))
                {
                    yield return inner;
                }
            }
        }
    }
}
