using System.Reflection;
using ModularChat.BuildingBlocks.Errors;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// A query parameter that takes one value, sent more than once (<c>?q=a&amp;q=b</c>), is refused with a 400 naming it. The
/// framework binds such a parameter to its values joined by commas ("a,b"): a search for text nobody typed, a
/// context query nobody asked. Parameters that take several values (arrays, such as <c>metadata</c>) are left alone.
/// </summary>
internal static class SingleValuedQuery
{
    /// <summary>Adds the check to every endpoint mapped under <paramref name="group"/>.</summary>
    public static RouteGroupBuilder RefuseRepeatedQueryValues(this RouteGroupBuilder group)
        => group.AddEndpointFilterFactory(Filter);

    private static EndpointFilterDelegate Filter(EndpointFilterFactoryContext context, EndpointFilterDelegate next)
    {
        var single = context.MethodInfo.GetParameters().Where(TakesOneValue).Select(p => p.Name!).ToArray();
        if (single.Length == 0)
        {
            return next;
        }

        return invocation =>
        {
            var request = invocation.HttpContext.Request;
            foreach (var name in single)
            {
                if (request.Query.TryGetValue(name, out var values) && values.Count > 1 && !request.RouteValues.ContainsKey(name))
                {
                    throw new BadRequestException(name, $"'{name}' was given {values.Count} times: it takes one value.");
                }
            }

            return next(invocation);
        };
    }

    /// <summary>A parameter of a simple type, which the framework binds from the route or the query string.</summary>
    private static bool TakesOneValue(ParameterInfo parameter)
    {
        if (parameter.Name is null)
        {
            return false;
        }

        var type = Nullable.GetUnderlyingType(parameter.ParameterType) ?? parameter.ParameterType;
        return type == typeof(string) || type.IsPrimitive || type.IsEnum || type == typeof(Guid) || type == typeof(decimal)
               || type == typeof(DateTimeOffset) || type == typeof(DateTime) || type == typeof(DateOnly) || type == typeof(TimeSpan);
    }
}
