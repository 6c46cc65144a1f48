using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace ModularChat.Search.Vectors;

/// <summary>
/// Vectors as stored in PostgreSQL (a bytea next to the row's dimensions), in one of two formats told apart by length:
/// <see cref="VectorPrecision.Int8"/> is the unit vector quantized to one signed byte per dimension after its
/// little-endian float32 scale (dimensions + 4 bytes); <see cref="VectorPrecision.Float32"/> is the vector as
/// little-endian floats (4 bytes per dimension, the only format before 2026-12-02).
/// </summary>
/// <remarks>
/// A 1,024-dimension vector is 1,028 bytes as Int8, which PostgreSQL keeps in the row; as Float32 it is 4 KB, which it
/// first tries to compress and then moves to the table's TOAST table, at about three times the cost of writing it.
/// </remarks>
internal static class VectorBytes
{
    private const int ScaleBytes = sizeof(float);

    public static byte[] Encode(ReadOnlySpan<float> vector, VectorPrecision precision)
    {
        if (precision == VectorPrecision.Float32)
        {
            var floats = new byte[vector.Length * sizeof(float)];
            for (var i = 0; i < vector.Length; i++)
            {
                BinaryPrimitives.WriteSingleLittleEndian(floats.AsSpan(i * sizeof(float)), vector[i]);
            }

            return floats;
        }

        // The in-memory index quantizes unit vectors: stored the same way, loading them gives back the same bytes.
        var unit = vector.ToArray();
        VectorMath.Normalize(unit);
        var quantized = new sbyte[vector.Length];
        return Int8(quantized, VectorMath.Quantize(unit, quantized));
    }

    /// <summary>The <see cref="VectorPrecision.Int8"/> format of a quantized vector: <paramref name="scale"/>, then the bytes.</summary>
    public static byte[] Int8(ReadOnlySpan<sbyte> quantized, float scale)
    {
        var bytes = new byte[ScaleBytes + quantized.Length];
        BinaryPrimitives.WriteSingleLittleEndian(bytes, scale);
        MemoryMarshal.AsBytes(quantized).CopyTo(bytes.AsSpan(ScaleBytes));
        return bytes;
    }

    /// <summary>The format of a stored vector of <paramref name="length"/> bytes and <paramref name="dimensions"/> dimensions, or null when it is neither.</summary>
    public static VectorPrecision? FormatOf(int length, int dimensions) => dimensions <= 0 ? null
        : length == dimensions * sizeof(float) ? VectorPrecision.Float32
        : length == dimensions + ScaleBytes ? VectorPrecision.Int8
        : null;

    /// <summary>
    /// Reads an <see cref="VectorPrecision.Int8"/> vector as the in-memory index holds it (the quantized unit vector and
    /// its scale) without decoding it to floats: <see cref="Encode"/> quantizes a unit vector so that its largest
    /// magnitude is 127, and normalizing and quantizing the decoded vector again gives back the same bytes with a scale of
    /// 1 / |q|. False, and nothing written, for any other vector (Float32, or int8 written otherwise).
    /// </summary>
    public static bool TryReadUnitInt8(ReadOnlySpan<byte> stored, int dimensions, Span<sbyte> target, out float scale)
    {
        scale = 0;
        if (FormatOf(stored.Length, dimensions) != VectorPrecision.Int8)
        {
            return false;
        }

        var quantized = MemoryMarshal.Cast<byte, sbyte>(stored[ScaleBytes..]);
        if (Math.Abs((int)TensorPrimitives.MaxMagnitude(quantized)) != 127)
        {
            return false;
        }

        quantized.CopyTo(target);
        scale = 1f / MathF.Sqrt(VectorMath.Dot(quantized, quantized));
        return true;
    }

    /// <summary>The stored vector as floats (an Int8 one scaled back), or an empty array when its length fits neither format.</summary>
    public static float[] Decode(ReadOnlySpan<byte> bytes, int dimensions)
    {
        switch (FormatOf(bytes.Length, dimensions))
        {
            case VectorPrecision.Float32:
                var floats = new float[dimensions];
                for (var i = 0; i < floats.Length; i++)
                {
                    floats[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes[(i * sizeof(float))..]);
                }

                return floats;
            case VectorPrecision.Int8:
                var vector = new float[dimensions];
                TensorPrimitives.ConvertChecked(MemoryMarshal.Cast<byte, sbyte>(bytes[ScaleBytes..]), vector.AsSpan());
                TensorPrimitives.Multiply(vector, BinaryPrimitives.ReadSingleLittleEndian(bytes), vector);
                return vector;
            default:
                return [];
        }
    }
}
