using System.Diagnostics;
using ModularChat.Search.Storage;
using ModularChat.Search.Vectors;
using Xunit.Abstractions;

namespace ModularChat.Search.Tests;

public sealed class DebugTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(VectorPrecision.Int8)]
    [InlineData(VectorPrecision.Float32)]
    public void Debug_speed(VectorPrecision precision)
    {
        var random = new Random(1);
        var set = new TenantVectorSet("t", "m", precision);
        var conv = Enumerable.Range(0, 100).Select(_ => Guid.NewGuid()).ToArray();
        var rows = Enumerable.Range(0, 50_000).Select(i => new VectorRow(Guid.NewGuid(), conv[i % 100], EntryKind.Message, i / 100 + 1, null, "user",
            DateTimeOffset.UtcNow, "m", Enumerable.Range(0, 1024).Select(_ => (float)random.NextDouble() - 0.5f).ToArray(), [1, 2, 3])).ToList();
        var sw = Stopwatch.StartNew();
        set.Apply(rows, []);
        output.WriteLine($"load {sw.ElapsedMilliseconds} ms, {set.Bytes / 1e6} MB");
        var q = Enumerable.Range(0, 1024).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        VectorMath.Normalize(q);
        for (var i = 0; i < 5; i++)
        {
            set.Search(new VectorQuery(q, new VectorFilter(), 100, 0.5f, 0.25f));
        }

        sw.Restart();
        for (var i = 0; i < 20; i++)
        {
            set.Search(new VectorQuery(q, new VectorFilter(), 100, 0.5f, 0.25f));
        }

        output.WriteLine($"{precision}: {sw.Elapsed.TotalMilliseconds / 20:F1} ms per search");
        var data = new sbyte[50_000 * 1024];
        random.NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
        var qq = new sbyte[1024];
        var total = 0L;
        sw.Restart();
        for (var r = 0; r < 20; r++)
        {
            for (var i = 0; i < 50_000; i++)
            {
                total += VectorMath.Dot(qq, data.AsSpan(i * 1024, 1024));
            }
        }

        output.WriteLine($"raw dot loop: {sw.Elapsed.TotalMilliseconds / 20:F1} ms ({total})");
    }
}
