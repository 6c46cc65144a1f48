using System.Text.Json;
using System.Text.Json.Serialization;

namespace ModularChat.BuildingBlocks.Validation;

/// <summary>
/// Reads every JSON string of a request body (values and object keys) and refuses the NUL character (U+0000, sent as
/// <c>\u0000</c>): PostgreSQL cannot store it in <c>text</c> or <c>jsonb</c>, so without this check such a request got as
/// far as the database and failed there with a 500. It is refused where it is read instead, with a 400 that names the
/// field. Writing is unchanged.
/// </summary>
public sealed class StorableTextJsonConverter : JsonConverter<string>
{
    public override bool HandleNull => false;

    public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        => Checked(reader.GetString());

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options)
        => writer.WriteStringValue(value);

    public override string ReadAsPropertyName(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        => Checked(reader.GetString())!;

    public override void WriteAsPropertyName(Utf8JsonWriter writer, string value, JsonSerializerOptions options)
        => writer.WritePropertyName(value);

    private static string? Checked(string? value)
        => value is not null && !StorableText.IsStorable(value) ? throw new UnstorableTextException() : value;
}

/// <summary>A request body's string holds a character that cannot be stored (the NUL character, U+0000).</summary>
/// <remarks>A <see cref="JsonException"/>, so the serializer adds the path of the string before the request fails.</remarks>
public sealed class UnstorableTextException() : JsonException(Reason)
{
    /// <summary>What is wrong, for the client.</summary>
    public const string Reason = "text must not contain the NUL character (U+0000, \\u0000): it cannot be stored";
}
