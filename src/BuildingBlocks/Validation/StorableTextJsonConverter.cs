using System.Text.Json;
using System.Text.Json.Serialization;

namespace ModularChat.BuildingBlocks.Validation;

/// <summary>
/// Reads every JSON string of a request body (values and object keys) and refuses the NUL character (U+0000, sent as
/// <c>\u0000</c>): PostgreSQL cannot store it in <c>text</c> or <c>jsonb</c>, so without this check such a request got as
/// far as the database and failed there with a 500. It is refused where it is read instead, with a 400 that names the
/// field. So is an escaped lone surrogate (<c>\ud800</c> without its other half), which is no text at all: the reader
/// refused it before, as a malformed body that named no field. Writing is unchanged.
/// </summary>
public sealed class StorableTextJsonConverter : JsonConverter<string>
{
    public override bool HandleNull => false;

    public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        => Checked(ref reader);

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options)
        => writer.WriteStringValue(value);

    public override string ReadAsPropertyName(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        => Checked(ref reader)!;

    public override void WriteAsPropertyName(Utf8JsonWriter writer, string value, JsonSerializerOptions options)
        => writer.WritePropertyName(value);

    private static string? Checked(ref Utf8JsonReader reader)
    {
        string? value;
        try
        {
            value = reader.GetString();
        }
        catch (InvalidOperationException) when (reader.TokenType is JsonTokenType.String or JsonTokenType.PropertyName)
        {
            // A string token that does not decode to UTF-16 (other tokens keep the reader's own error): bytes that are not
            // UTF-8 (the reader checks them only now), else an unpaired surrogate escape.
            var utf8 = reader.HasValueSequence ? System.Buffers.BuffersExtensions.ToArray(reader.ValueSequence) : reader.ValueSpan;
            throw new UnstorableTextException(System.Text.Unicode.Utf8.IsValid(utf8) ? UnstorableTextException.LoneSurrogate : UnstorableTextException.NotUtf8);
        }

        return value is not null && !StorableText.IsStorable(value) ? throw new UnstorableTextException(UnstorableTextException.Nul) : value;
    }
}

/// <summary>A request body's string holds what cannot be stored: the NUL character (U+0000), a lone surrogate, or bytes that are not UTF-8.</summary>
/// <remarks>A <see cref="JsonException"/>, so the serializer adds the path of the string before the request fails.</remarks>
public sealed class UnstorableTextException(string reason) : JsonException(reason)
{
    /// <summary>The NUL character, for the client.</summary>
    public const string Nul = "text must not contain the NUL character (U+0000, \\u0000): it cannot be stored";

    /// <summary>Bytes that are not UTF-8, for the client.</summary>
    public const string NotUtf8 = "text must be UTF-8: the body holds bytes that are not (send it in UTF-8, as its charset says)";

    /// <summary>A lone surrogate, for the client.</summary>
    public const string LoneSurrogate =
        "text must not contain a lone surrogate (\\ud800 to \\udfff without its other half): it is not Unicode text and cannot be stored";

    /// <summary>What is wrong, for the client.</summary>
    public string Reason { get; } = reason;
}
