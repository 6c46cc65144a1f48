using System.ClientModel;

using System.Net.Sockets;
using Microsoft.AspNetCore.Http;
using ModularChat.BuildingBlocks.Security;
using ModularChat.Providers.Network;

namespace ModularChat.Providers.Clients;

/// <summary>
/// A call to a model provider failed: 502 (the provider failed or refused) or 504 (it did not answer in time); also a chat
/// turn whose own deadline (Chat:TurnTimeout) passed, which ends as a model call that timed out.
/// </summary>
internal sealed class ModelCallException(int status, string title, string detail, int? providerStatus) : Exception(detail), IModelCallFailure
{
    public int Status { get; } = status;

    public string Title { get; } = title;

    /// <summary>The provider's HTTP status, when it answered.</summary>
    public int? ProviderStatus { get; } = providerStatus;

    /// <summary>
    /// The failure for <paramref name="error"/> from <paramref name="provider"/>, its message scrubbed of the key and
    /// anything credential-shaped. Null when the error is the caller's cancellation (nobody is waiting for an answer).
    /// </summary>
    public static ModelCallException? From(Exception error, ResolvedProvider provider, string model, CancellationToken callerToken)
    {
        error = LastTry(error);
        if (error is OperationCanceledException && callerToken.IsCancellationRequested)
        {
            return null;
        }

        // The key and the credentials it carries (a key written "Basic dXNlcjpwYXNz" or "Token abc...": the part after the
        // scheme, and Basic's user:password and password), which a server that repeats what it was sent quotes on their own.
        var secrets = Redaction.WithCredentialParts(provider.ApiKey);
        switch (error)
        {
            case ModelCallException known:
                return known;
            case ClientResultException result when result.Status > 0:
                var reason = result.Status switch
                {
                    401 or 403 => " Check the provider's API key and its access to the model.",
                    404 => " Check the endpoint and the model name.",
                    429 => " The provider is rate limiting: retry later.",
                    _ => "",
                };
                return new ModelCallException(
                    result.Status is 408 or 504 ? StatusCodes.Status504GatewayTimeout : StatusCodes.Status502BadGateway,
                    "The model provider refused or failed the request.",
                    $"Provider '{provider.Name}' (model '{model}') answered HTTP {result.Status}: {FirstLine(Redaction.Scrub(result.Message, secrets))}.{reason}",
                    result.Status);
            case var _ when Inner<ModelReportedErrorException>(error) is { } reported:
                // The provider answered 200, then reported a failure: in an event of its stream (OpenAI's
                // {"error": {...}}), so the answer is not complete whatever came before, or as the whole answer.
                return new ModelCallException(StatusCodes.Status502BadGateway,
                    reported.Streamed ? "The model provider failed while answering." : "The model provider refused or failed the request.",
                    $"Provider '{provider.Name}' (model '{model}') reported an error {(reported.Streamed ? "in its stream" : "instead of an answer")}" +
                    (reported.Type is { Length: > 0 } type ? $" ({FirstLine(Redaction.Scrub(type, secrets))})" : "") +
                    $": {FirstLine(Redaction.Scrub(reported.Message, secrets))}.", null);
            case OperationCanceledException or TimeoutException:
                return new ModelCallException(StatusCodes.Status504GatewayTimeout, "The model provider did not answer in time.",
                    $"Provider '{provider.Name}' (model '{model}') did not answer within the configured time (Providers:RequestTimeout).", null);
            case var _ when Inner<System.Text.Json.JsonException>(error) is { } json:
                // Something answered 200 that is not JSON: a gateway's or a login page, a proxy's error text.
                return NotTheProtocol(provider, model, $"not JSON ({FirstLine(Redaction.Scrub(json.Message, secrets))})");
            case ArgumentOutOfRangeException or IndexOutOfRangeException or KeyNotFoundException when !FromTransport(error):
                // JSON, but not a chat completion: the OpenAI client trips over what is missing (an empty 'choices').
                return NotTheProtocol(provider, model, "a chat completion without choices or with fields missing");
            case var _ when !FromTransport(error) && Unreadable(error) is { } unreadable:
                // JSON of the protocol's shape that the client cannot read: text with a lone surrogate escape ("\ud800"), a
                // null where a list belongs ("choices": null), a count past 32 bits. The provider answered: it was reached.
                return new ModelCallException(StatusCodes.Status502BadGateway, "The model provider's answer could not be read.",
                    $"Provider '{provider.Name}' (model '{model}') answered with something that could not be read: " +
                    $"{FirstLine(Redaction.Scrub(Describe(unreadable), secrets))}.", null);
            default:
                var socket = Inner<SocketException>(error);
                var detail = Inner<OutboundRefusedException>(error) is { } rule ? rule.Message : socket?.SocketErrorCode switch
                {
                    SocketError.ConnectionRefused => $"the connection to {provider.Endpoint.Authority} was refused.",
                    SocketError.HostNotFound or SocketError.NoData => $"the host {provider.Endpoint.Host} was not found.",
                    SocketError.TimedOut => $"connecting to {provider.Endpoint.Authority} timed out.",
                    _ => FirstLine(Redaction.Scrub((Inner<HttpRequestException>(error) ?? error).Message, secrets)),
                };
                return new ModelCallException(StatusCodes.Status502BadGateway, "The model provider could not be reached.",
                    $"Provider '{provider.Name}' (model '{model}') could not be reached: {detail}", null);
        }
    }

    /// <summary>
    /// What a call that the client tried more than once failed with. The client's retry policy throws an
    /// <see cref="AggregateException"/> of every try's error ("Retry failed after 2 tries"), which says nothing by its own
    /// type: a timeout or a cancellation in any try is what the call ended with (it is never retried), else the last try's error.
    /// </summary>
    internal static Exception LastTry(Exception error)
    {
        if (error is not AggregateException { InnerExceptions.Count: > 0 } tries)
        {
            return error;
        }

        return LastTry(tries.InnerExceptions.LastOrDefault(e => e is OperationCanceledException or TimeoutException) ?? tries.InnerExceptions[^1]);
    }

    private static ModelCallException NotTheProtocol(ResolvedProvider provider, string model, string what) => new(
        StatusCodes.Status502BadGateway, "The model provider's answer could not be read.",
        $"Provider '{provider.Name}' (model '{model}') answered with something that is not an OpenAI-compatible response: {what}. Check the endpoint (it usually ends in /v1).",
        null);

    /// <summary>Whether <paramref name="error"/> comes from the connection (refused, reset, cut, TLS), not from reading what arrived.</summary>
    private static bool FromTransport(Exception error)
        => Inner<HttpRequestException>(error) is not null || Inner<IOException>(error) is not null || Inner<SocketException>(error) is not null;

    /// <summary>
    /// The exception of <paramref name="error"/> that says the answer could not be read: the JSON reader's (a string that
    /// is no UTF-16 text, an element of another kind than the protocol's), or a number out of its type's range.
    /// </summary>
    private static Exception? Unreadable(Exception error)
    {
        for (Exception? e = error; e is not null; e = e.InnerException)
        {
            if (e is InvalidOperationException or FormatException or OverflowException or InvalidCastException or ArgumentException)
            {
                return e;
            }
        }

        return null;
    }

    private static string Describe(Exception unreadable) => unreadable switch
    {
        FormatException or OverflowException => $"a value in a form or of a size the client does not read, such as a token count past 32 bits ({unreadable.Message.TrimEnd('.')})",
        _ => unreadable.Message,
    };

    private static T? Inner<T>(Exception? e)
        where T : Exception
    {
        for (; e is not null; e = e.InnerException)
        {
            if (e is T t)
            {
                return t;
            }
        }

        return null;
    }

    /// <summary>The provider's own words, at most 500 characters: cut after the secrets are taken out, never before (a key cut in two is no longer found).</summary>
    private static string FirstLine(string message)
    {
        var lines = message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        // The OpenAI client's messages are "HTTP 401 (type: code)" then the provider's own message.
        var text = string.Join(" ", lines.Where(l => !l.StartsWith("HTTP ", StringComparison.Ordinal))).TrimEnd('.');
        text = text.Length == 0 ? string.Join(" ", lines) : text;
        return text.Length > 500 ? text[..500] + "..." : text;
    }
}

