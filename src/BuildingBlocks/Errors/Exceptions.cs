namespace ModularChat.BuildingBlocks.Errors;

/// <summary>The resource does not exist for this caller (another tenant's resource is reported the same way).</summary>
public sealed class NotFoundException(string resource, object id)
    : Exception($"{resource} '{id}' was not found.")
{
    public string Resource { get; } = resource;
}

/// <summary>The request conflicts with the resource's current state (409).</summary>
public sealed class ConflictException(string message, IReadOnlyDictionary<string, object?>? extensions = null)
    : Exception(message)
{
    public IReadOnlyDictionary<string, object?> Extensions { get; } = extensions ?? new Dictionary<string, object?>();
}

/// <summary>A configured limit was exceeded (422 for content limits, 413 for payload size).</summary>
public sealed class LimitExceededException(string field, string message, bool payloadTooLarge = false)
    : Exception(message)
{
    public string Field { get; } = field;

    public bool PayloadTooLarge { get; } = payloadTooLarge;
}

/// <summary>A request argument outside the body (query string, cursor) is malformed (400).</summary>
public sealed class BadRequestException(string field, string message) : Exception(message)
{
    public string Field { get; } = field;
}

/// <summary>
/// This node is stopping and does not take the work asked of it (503 with Retry-After): another node, or this one after
/// its restart, takes the request sent again.
/// </summary>
public sealed class NodeStoppingException(string message) : Exception(message);
