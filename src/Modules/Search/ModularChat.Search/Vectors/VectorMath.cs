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
        var max = vector.Length == 0 ? 0 : TensorPrimitives.MaxMagnitude(vector);
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
        if (Vector256.IsHardwareAccelerated && length >= Vector256<sbyte>.Count)
        {
            var acc = Vector256<int>.Zero;
            for (; i <= length - Vector256<sbyte>.Count; i += Vector256<sbyte>.Count)
            {
                var va = Vector256.LoadUnsafe(ref ra, (nuint)i);
                var vb = Vector256.LoadUnsafe(ref rb, (nuint)i);
                var (aLow, aHigh) = Vector256.Widen(va);
                var (bLow, bHigh) = Vector256.Widen(vb);
                acc += MultiplyAddPairs(aLow, bLow) + MultiplyAddPairs(aHigh, bHigh);
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

    /// <summary>Products of 16 pairs of shorts, adjacent products summed into 8 ints (one vpmaddwd on AVX2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> MultiplyAddPairs(Vector256<short> a, Vector256<short> b)
    {
        if (Avx2.IsSupported)
        {
            return Avx2.MultiplyAddAdjacent(a, b);
        }

        // int8 * int8 fits in a short (|x| <= 127), so multiply before widening.
        var (low, high) = Vector256.Widen(a * b);
        return low + high;
    }
}
