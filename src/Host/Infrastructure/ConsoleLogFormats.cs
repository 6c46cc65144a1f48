using Microsoft.Extensions.Logging.Console;

namespace ModularChat.Host.Infrastructure;

/// <summary>
/// The console formatters read one section, <c>Logging:Console:FormatterOptions</c>, and so one timestamp format. The simple
/// formatter writes the timestamp straight before the level, so its format ends in the space between them; the json
/// formatter writes it into a field of its own, where that space ended every value (<c>"2026-12-06T12:00:00.000Z "</c>). The
/// json formatter gets the format without white space at its end; the simple one keeps it.
/// </summary>
internal static class ConsoleLogFormats
{
    public static ILoggingBuilder UseTimestampFormatsPerFormatter(this ILoggingBuilder logging)
    {
        logging.Services.PostConfigure<JsonConsoleFormatterOptions>(o => o.TimestampFormat = o.TimestampFormat?.TrimEnd());
        return logging;
    }
}
