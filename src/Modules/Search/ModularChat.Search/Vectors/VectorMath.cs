using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModularChat.Search.Vectors;

/// <summary>SIMD kernels of the in-memory vector index.</summary>
internal static class VectorMath
{
    /// <summary>Scales <paramref name="vector"/> to unit length in place (cosine becomes a dot product).</summary>
    public static void Normalize(Span<float> vector)
    {
        var norm = TensorPrimitives.Norm(vector);
        if (norm > 0)
        {
            TensorPrimitives.Divide(vector, norm, vector);
        }
    }

    /// <summary>8-bit symmetric quantization: <paramref name="target"/>[i] * scale ≈ <paramref name="vector"/>[i]; returns the scale.</summary>
    public static float Quantize(ReadOnlySpan<float> vector, Span<sbyte> target)
    {
        // MaxMagnitude returns the element (with its sign) of largest magnitude.
        var max = vector.Length == 0 ? 0 : MathF.Abs(TensorPrimitives.MaxMagnitude(vector));
        if (max <= 0 || float.IsNaN(max))
        {
            target.Clear();
            return 0;
        }

        var scale = max / 127f;
        for (var i = 0; i < vector.Length; i++)
        {
            target[i] = (sbyte)Math.Clamp(MathF.Round(vector[i] / scale), -127, 127);
        }

        return scale;
    }

    /// <summary>Adds <paramref name="scale"/> * <paramref name="quantized"/> to <paramref name="sum"/>, using <paramref name="buffer"/> as scratch.</summary>
    public static void AddDequantized(ReadOnlySpan<sbyte> quantized, float scale, Span<float> sum, Span<float> buffer)
    {
        TensorPrimitives.ConvertChecked(quantized, buffer);
        TensorPrimitives.MultiplyAdd(buffer, scale, sum, sum);
    }

    /// <summary>The integer dot product of two int8 vectors of equal length.</summary>
    public static int Dot(ReadOnlySpan<sbyte> a, ReadOnlySpan<sbyte> b)
    {
        var length = a.Length;
        ref var ra = ref MemoryMarshal.GetReference(a);
        ref var rb = ref MemoryMarshal.GetReference(b);
        var i = 0;
        var sum = 0;
        if (Avx2.IsSupported && length >= Vector256<sbyte>.Count)
        {
            // |a| (unsigned) times b with a's sign, 32 bytes at a time: vpmaddubsw sums adjacent products into shorts
            // (at most 2 * 127 * 127, no saturation), vpmaddwd by ones widens pairs of them into ints.
            var ones = Vector256.Create((short)1);
            var acc = Vector256<int>.Zero;
            for (; i <= length - Vector256<sbyte>.Count; i += Vector256<sbyte>.Count)
            {
                var va = Vector256.LoadUnsafe(ref ra, (nuint)i);
                var vb = Vector256.LoadUnsafe(ref rb, (nuint)i);
                var pairs = Avx2.MultiplyAddAdjacent(Avx2.Abs(va), Avx2.Sign(vb, va));
                acc = Avx2.Add(acc, Avx2.MultiplyAddAdjacent(pairs, ones));
            }

            sum = Vector256.Sum(acc);
        }
        else if (Vector256.IsHardwareAccelerated && length >= Vector256<sbyte>.Count)
        {
            var acc = Vector256<int>.Zero;
            for (; i <= length - Vector256<sbyte>.Count; i += Vector256<sbyte>.Count)
            {
                var va = Vector256.LoadUnsafe(ref ra, (nuint)i);
                var vb = Vector256.LoadUnsafe(ref rb, (nuint)i);
                var (aLow, aHigh) = Vector256.Widen(va);
                var (bLow, bHigh) = Vector256.Widen(vb);
                var (p0, p1) = Vector256.Widen(aLow * bLow);
                var (p2, p3) = Vector256.Widen(aHigh * bHigh);
                acc += p0 + p1 + p2 + p3;
            }

            sum = Vector256.Sum(acc);
        }
        else if (Vector128.IsHardwareAccelerated && length >= Vector128<sbyte>.Count)
        {
            var acc = Vector128<int>.Zero;
            for (; i <= length - Vector128<sbyte>.Count; i += Vector128<sbyte>.Count)
            {
                var va = Vector128.LoadUnsafe(ref ra, (nuint)i);
                var vb = Vector128.LoadUnsafe(ref rb, (nuint)i);
                var (aLow, aHigh) = Vector128.Widen(va);
                var (bLow, bHigh) = Vector128.Widen(vb);
                var (p0, p1) = Vector128.Widen(aLow * bLow);
                var (p2, p3) = Vector128.Widen(aHigh * bHigh);
                acc += p0 + p1 + p2 + p3;
            }

            sum = Vector128.Sum(acc);
        }

        for (; i < length; i++)
        {
            sum += Unsafe.Add(ref ra, i) * Unsafe.Add(ref rb, i);
        }

        return sum;
    }
}
