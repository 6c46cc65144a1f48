using System.Globalization;
using Wolverine;

namespace ModularChat.BuildingBlocks.Messaging;

/// <summary>
/// Counts of a message's failures of one kind, kept in a header of its envelope: Wolverine's own <see cref="Envelope.Attempts"/>
/// counts every attempt of every kind (put-backs while the database is away included), so a rule that gives up after so
/// many failures of its own kind keeps its own count. Headers are stored with the message: whoever dead-letters it removes
/// the count, so a replay starts afresh.
/// </summary>
public static class EnvelopeCounters
{
    /// <summary>Counts one more failure in <paramref name="envelope"/>'s <paramref name="header"/>, and returns the count.</summary>
    public static int Increment(Envelope envelope, string header)
    {
        var count = envelope.Headers.TryGetValue(header, out var value)
            && int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var counted) ? counted + 1 : 1;
        envelope.Headers[header] = count.ToString(CultureInfo.InvariantCulture);
        return count;
    }
}
