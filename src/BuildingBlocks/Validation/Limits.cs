using FluentValidation;

namespace ModularChat.BuildingBlocks.Validation;

/// <summary>Marks validation rules that enforce a configured limit: they answer 422, not 400.</summary>
public static class Limits
{
    /// <summary>The FluentValidation error code of a limit rule.</summary>
    public const string ErrorCode = "LimitExceeded";

    /// <summary>Marks the rule as a configured limit (422 Unprocessable Content when broken).</summary>
    public static IRuleBuilderOptions<T, TProperty> AsLimit<T, TProperty>(this IRuleBuilderOptions<T, TProperty> rule)
        => rule.WithErrorCode(ErrorCode);
}
