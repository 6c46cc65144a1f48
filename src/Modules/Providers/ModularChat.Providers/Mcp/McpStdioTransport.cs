using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Threading.Channels;
using ModelContextProtocol.Client;
using ModelContextProtocol.Protocol;
using ModularChat.BuildingBlocks.Security;
using ModularChat.BuildingBlocks.Validation;

namespace ModularChat.Providers.Mcp;

/// <summary>A stdio MCP program misbehaved (wrote a message too long to read, or ended); the message says which, with no secret.</summary>
internal sealed class McpStdioException(string message) : IOException(message);

/// <summary>
/// Runs a stdio MCP program and speaks JSON-RPC over its stdin/stdout, with what the SDK's StdioClientTransport lacks:
/// a bound on what is read. The SDK reads a message (a line) whole, however long, so a program that writes bytes without
/// ever writing a newline would make this service read them into memory until it dies; here a line longer than
/// <c>OutboundNetwork:MaxResponseBytes</c> fails the connection and the program is killed at once. stderr is drained (a
/// program blocked on a full pipe would hang) and only its last lines are kept, each cut, for the error of a program that
/// ended. The program is started as the SDK did (no shell, its arguments as given, the environment given and nothing else)
/// but in an empty directory of its own, not this service's working directory (where its settings files are), and
/// tracked by <see cref="McpStdioProcesses"/>; when the connection ends, it is killed with everything it started, without
/// the SDK's wait for it to exit by itself first, and its directory is removed with what it wrote there.
/// </summary>
internal sealed class McpStdioTransport(
    McpStdioProcesses processes, string name, string command, IReadOnlyList<string> arguments, IDictionary<string, string?> environment, long maxMessageBytes,
    IReadOnlyList<string> secrets)
    : IClientTransport
{
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false);

    public string Name => name;

    public async Task<ITransport> ConnectAsync(CancellationToken cancellationToken = default)
    {
        var start = new ProcessStartInfo
        {
            FileName = command,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            CreateNoWindow = true,
            // Created for the owner alone (0700): a program sees no file of the service's, nor another connection's.
            WorkingDirectory = Directory.CreateTempSubdirectory("modularchat-mcp-").FullName,
            StandardInputEncoding = Utf8,
            StandardOutputEncoding = Utf8,
            StandardErrorEncoding = Utf8,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment.Clear();
        foreach (var (key, value) in environment)
        {
            start.Environment[key] = value;
        }

        Process process;
        try
        {
            process = processes.Start(start);
        }
        catch
        {
            Session.RemoveDirectory(start.WorkingDirectory);
            throw;
        }

        var session = new Session(processes, process, command, maxMessageBytes, secrets, start.WorkingDirectory);
        try
        {
            var output = new LineLimitedStream(process.StandardOutput.BaseStream, maxMessageBytes, session.TooLong, session.EndedAsync);
            session.Inner = await new StreamClientTransport(process.StandardInput.BaseStream, output).ConnectAsync(cancellationToken);
            return session;
        }
        catch
        {
            await session.DisposeAsync();
            throw;
        }
    }

    /// <summary>One running program: the SDK's stream transport over its pipes, and the program's end with it.</summary>
    private sealed class Session : ITransport
    {
        private const int StderrTailLines = 10;
        private const int StderrLineLength = 500;

        private readonly McpStdioProcesses _processes;
        private readonly Process _process;
        private readonly string _command;
        private readonly long _maxMessageBytes;
        private readonly IReadOnlyList<string> _secrets;
        private readonly Queue<string> _stderrTail = new();
        private readonly Task _stderr;
        private int _closed;

        private readonly string _directory;

        public Session(McpStdioProcesses processes, Process process, string command, long maxMessageBytes, IReadOnlyList<string> secrets, string directory)
        {
            _directory = directory;
            _secrets = secrets;
            _processes = processes;
            _process = process;
            _command = command;
            _maxMessageBytes = maxMessageBytes;
            _stderr = Task.Run(() => DrainStderrAsync(process.StandardError.BaseStream));
        }

        public ITransport Inner { get; set; } = null!;

        public string? SessionId => Inner.SessionId;

        public ChannelReader<JsonRpcMessage> MessageReader => Inner.MessageReader;

        public Task SendMessageAsync(JsonRpcMessage message, CancellationToken cancellationToken = default) => Inner.SendMessageAsync(message, cancellationToken);

        /// <summary>The program wrote a line longer than allowed: it is killed, and the connection fails with this.</summary>
        public Exception TooLong()
        {
            Close();
            return new McpStdioException(
                $"The program '{_command}' wrote a message longer than {_maxMessageBytes.ToString("N0", CultureInfo.InvariantCulture)} bytes " +
                "(OutboundNetwork:MaxResponseBytes); it was stopped.");
        }

        /// <summary>The program's stdout ended: unless this end closed it, why (its exit code and the last lines of its stderr).</summary>
        public async Task<Exception?> EndedAsync()
        {
            if (Volatile.Read(ref _closed) != 0)
            {
                return null;
            }

            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            try
            {
                await _process.WaitForExitAsync(wait.Token);
                await _stderr.WaitAsync(wait.Token);
            }
            catch (OperationCanceledException)
            {
                return null; // it closed its stdout but runs on: the SDK says the server shut down
            }

            string tail;
            lock (_stderrTail)
            {
                tail = _stderrTail.Count == 0 ? "" : $"; the last lines of its stderr: {string.Join(" | ", _stderrTail)}";
            }

            return new McpStdioException($"The program '{_command}' exited (exit code {_process.ExitCode}){tail}");
        }

        public async ValueTask DisposeAsync()
        {
            Close();
            if (Inner is not null)
            {
                await Inner.DisposeAsync();
            }

            try
            {
                await _stderr.WaitAsync(TimeSpan.FromSeconds(2));
            }
            catch (TimeoutException)
            {
                // Something it started still holds stderr open: it was killed too, the pipe closes when it is reaped.
            }

            _process.Dispose();
            RemoveDirectory(_directory);
        }

        /// <summary>Removes a program's working directory with what it wrote there (what cannot be removed is left to the temporary folder's clean-up).</summary>
        internal static void RemoveDirectory(string directory)
        {
            try
            {
                Directory.Delete(directory, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Something it started still writes there, or made a file it may not delete.
            }
        }

        private void Close()
        {
            if (Interlocked.Exchange(ref _closed, 1) == 0)
            {
                _processes.Kill(_process);
            }
        }

        /// <summary>Reads stderr to its end, keeping only its last lines, each cut: a program may write anything there.</summary>
        private async Task DrainStderrAsync(Stream stderr)
        {
            var decoder = Utf8.GetDecoder();
            var bytes = new byte[4096];
            var chars = new char[Utf8.GetMaxCharCount(bytes.Length)];
            var line = new StringBuilder();
            var cut = false;
            try
            {
                int read;
                while ((read = await stderr.ReadAsync(bytes)) > 0)
                {
                    var count = decoder.GetChars(bytes, 0, read, chars, 0);
                    foreach (var c in chars.AsSpan(0, count))
                    {
                        if (c == '\n')
                        {
                            Keep(line, cut);
                            cut = false;
                        }
                        else if (c != '\r')
                        {
                            if (line.Length < StderrLineLength)
                            {
                                line.Append(char.IsControl(c) ? '?' : c);
                            }
                            else
                            {
                                cut = true;
                            }
                        }
                    }
                }

                Keep(line, cut);
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
                // The pipe broke: the program is gone.
            }
        }

        /// <summary>
        /// Keeps a line of stderr without the server's secrets (a program may print its environment): a line cut before
        /// it could be scrubbed also loses the first characters of a secret that ran past the cut.
        /// </summary>
        private void Keep(StringBuilder line, bool cut)
        {
            if (line.Length == 0)
            {
                return;
            }

            if (cut && char.IsHighSurrogate(line[^1]))
            {
                line.Length--; // half a character
            }

            var kept = cut ? Redaction.ScrubCut(line.ToString(), _secrets) : Redaction.Scrub(line.ToString(), _secrets);
            lock (_stderrTail)
            {
                if (_stderrTail.Count == StderrTailLines)
                {
                    _stderrTail.Dequeue();
                }

                _stderrTail.Enqueue(kept);
            }

            line.Clear();
        }
    }

    /// <summary>
    /// The program's stdout as the SDK reads it (line by line, each line a message): fails with
    /// <paramref name="tooLong"/> as soon as a line passes <paramref name="maxLineBytes"/>, before the SDK has buffered
    /// more than that; at its end, fails with what <paramref name="ended"/> says, if anything.
    /// </summary>
    private sealed class LineLimitedStream(Stream inner, long maxLineBytes, Func<Exception> tooLong, Func<Task<Exception?>> ended)
        : ReadOnlyWrapperStream(inner, ownsInner: true)
    {
        private long _lineBytes;

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            var read = await Inner.ReadAsync(buffer, cancellationToken);
            if (read == 0)
            {
                return await ended() is { } error ? throw error : 0;
            }

            Count(buffer.Span[..read]);
            return read;
        }

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer, offset, count, CancellationToken.None).GetAwaiter().GetResult();

        private void Count(ReadOnlySpan<byte> bytes)
        {
            for (var newline = bytes.IndexOf((byte)'\n'); newline >= 0; newline = bytes.IndexOf((byte)'\n'))
            {
                Check(_lineBytes + newline);
                _lineBytes = 0;
                bytes = bytes[(newline + 1)..];
            }

            _lineBytes += bytes.Length;
            Check(_lineBytes);
        }

        private void Check(long lineBytes)
        {
            if (lineBytes > maxLineBytes)
            {
                throw tooLong();
            }
        }
    }
}
