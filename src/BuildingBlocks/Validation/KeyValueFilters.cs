using System.Linq.Expressions;
using FluentValidation;

namespace ModularChat.BuildingBlocks.Validation;

/// <summary>Repeatable <c>key=value</c> query filters (metadata filters of lists and searches).</summary>
public static class KeyValueFilters
{
    /// <summary>
    /// At most <paramref name="max"/> filters (422 beyond; <paramref name="limitSetting"/> names the setting, if any), each with
    /// a key before its first '=' (400), and, when <paramref name="refuseNul"/>, none holding the NUL character, which no
    /// stored text holds (400).
    /// </summary>
    public static void KeyValueFilterRules<T>(
        this AbstractValidator<T> validator, Expression<Func<T, IEnumerable<string>?>> filters, string name, int max, string example,
        string? limitSetting = null, bool refuseNul = true)
    {
        validator.RuleFor(filters).Must(f => f is null || f.Count() <= max)
            .WithMessage($"At most {max} '{name}' filters{(limitSetting is null ? "" : $" ({limitSetting})")}.").AsLimit();
        validator.RuleForEach<string>(filters).Must(f => f is not null && f.IndexOf('=', StringComparison.Ordinal) > 0)
            .WithMessage($"'{name}' filters are key=value, e.g. {name}={example}.");
        if (refuseNul)
        {
            validator.RuleForEach<string>(filters).Must(f => f is null || StorableText.IsStorable(f))
                .WithMessage($"'{name}' filters must not contain the NUL character (U+0000): no stored metadata holds it.");
        }
    }

    /// <summary>Filters that passed <see cref="KeyValueFilterRules{T}"/> as pairs, split at the first '='.</summary>
    public static List<KeyValuePair<string, string>> Pairs(IEnumerable<string>? filters) => (filters ?? []).Select(filter =>
    {
        var at = filter.IndexOf('=', StringComparison.Ordinal);
        return KeyValuePair.Create(filter[..at], filter[(at + 1)..]);
    }).ToList();
}
