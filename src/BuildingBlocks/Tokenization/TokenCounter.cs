using Microsoft.ML.Tokenizers;

namespace ModularChat.BuildingBlocks.Tokenization;

/// <summary>Counts tokens the way current OpenAI models do (o200k_base).</summary>
public interface ITokenCounter
{
    /// <summary>The number of o200k tokens in <paramref name="text"/>.</summary>
    int Count(string text);
}

/// <summary>o200k_base token counts through Microsoft.ML.Tokenizers (thread-safe, one instance per process).</summary>
public sealed class O200kTokenCounter : ITokenCounter
{
    private readonly Tokenizer _tokenizer = TiktokenTokenizer.CreateForEncoding("o200k_base");

    public int Count(string text) => string.IsNullOrEmpty(text) ? 0 : _tokenizer.CountTokens(text);
}
