using System.Collections;
using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;

namespace ModularChat.BuildingBlocks.Options;

/// <summary>
/// A validation failure's property path as the configuration key the value came from, for messages an operator acts on:
/// FluentValidation writes nested options with dots (<c>Llm.Endpoint</c>) and a collection's item by its position, which for
/// a dictionary bound from configuration is its entry (<c>Variants[0].Value.Summarizer</c>), losing the name the operator gave it.
/// </summary>
internal static partial class ConfigurationKeys
{
    /// <summary>
    /// <paramref name="propertyPath"/> (of a failure validating <paramref name="options"/>) as a key under its section:
    /// <c>Llm.Endpoint</c> is <c>Llm:Endpoint</c>, <c>Variants[0].Value.Summarizer</c> is <c>Variants:&lt;the first
    /// entry's key&gt;:Summarizer</c>, <c>Variants[0].Key</c> is <c>Variants:&lt;that key&gt;</c> and <c>AllowedCommands[1]</c>
    /// is <c>AllowedCommands:1</c>, as configuration writes them.
    /// </summary>
    public static string Of(object options, string propertyPath)
    {
        var keys = new List<string>();
        object? current = options;
        foreach (var segment in propertyPath.Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            var match = Segment().Match(segment);
            var name = match.Groups["name"].Value;
            if (current is not null && Entry(current) is { } entry && name is "Key" or "Value")
            {
                // A dictionary's entry, already named by its key: its value goes on under that name.
                current = name == "Value" ? entry.Value : null;
                continue;
            }

            if (name.Length > 0)
            {
                keys.Add(name);
                current = current?.GetType().GetProperty(name, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase)?.GetValue(current);
            }

            foreach (Capture index in match.Groups["index"].Captures)
            {
                var position = int.Parse(index.Value, CultureInfo.InvariantCulture);
                // FluentValidation numbers the items as the collection enumerates them; this enumerates the same instance.
                var item = current is IEnumerable items and not string ? items.Cast<object?>().ElementAtOrDefault(position) : null;
                keys.Add(item is not null && Entry(item) is { } itemEntry
                    ? Convert.ToString(itemEntry.Key, CultureInfo.InvariantCulture) ?? index.Value
                    : index.Value);
                current = item;
            }
        }

        return string.Join(':', keys);
    }

    /// <summary>The key and value of <paramref name="item"/> when it is a dictionary's entry (a <see cref="KeyValuePair{TKey,TValue}"/>).</summary>
    private static (object? Key, object? Value)? Entry(object item)
    {
        var type = item.GetType();
        return type.IsGenericType && type.GetGenericTypeDefinition() == typeof(KeyValuePair<,>)
            ? (type.GetProperty("Key")!.GetValue(item), type.GetProperty("Value")!.GetValue(item))
            : null;
    }

    [GeneratedRegex(@"^(?<name>[^\[]*)(\[(?<index>\d+)\])*$")]
    private static partial Regex Segment();
}
