using FluentValidation;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using ModularChat.BuildingBlocks.Security;

namespace ModularChat.BuildingBlocks.Options;

/// <summary>Binds an options class to a configuration section and validates it when the host starts.</summary>
public static class OptionsRegistration
{
    /// <summary>
    /// Binds <typeparamref name="TOptions"/> to <paramref name="section"/> and validates it with
    /// <typeparamref name="TValidator"/> at start: a bad value stops the start with a message naming it.
    /// </summary>
    public static OptionsBuilder<TOptions> AddValidatedOptions<TOptions, TValidator>(this IServiceCollection services, string section)
        where TOptions : class
        where TValidator : class, IValidator<TOptions>, new()
    {
        services.AddSingleton<IValidateOptions<TOptions>>(new FluentValidateOptions<TOptions>(section, new TValidator()));
        return services.AddOptions<TOptions>()
            .BindConfiguration(section, o => o.ErrorOnUnknownConfiguration = false)
            .ValidateOnStart();
    }

    /// <summary>
    /// Adds <typeparamref name="TCheck"/> to the checks made when the node starts, before anything starts (see
    /// <see cref="IStartCheck"/>), in the order of registration.
    /// </summary>
    public static IServiceCollection AddStartCheck<TCheck>(this IServiceCollection services)
        where TCheck : class, IStartCheck
    {
        services.AddSingleton<IStartCheck, TCheck>();
        // The first check registers the runner, once, both as itself (the Host runs it too) and as a hosted service resolved
        // to that same instance (the host resolves its hosted services as one list, which would make a second one).
        if (!services.Any(d => d.ServiceType == typeof(StartChecks)))
        {
            services.AddSingleton<StartChecks>();
            services.AddSingleton<IHostedService>(s => s.GetRequiredService<StartChecks>());
        }

        return services;
    }

    private sealed class FluentValidateOptions<TOptions>(string section, IValidator<TOptions> validator) : IValidateOptions<TOptions>
        where TOptions : class
    {
        public ValidateOptionsResult Validate(string? name, TOptions options)
        {
            var result = validator.Validate(options);
            return result.IsValid
                ? ValidateOptionsResult.Success
                : ValidateOptionsResult.Fail(result.Errors.Select(e => Describe(options, e)));
        }

        /// <summary>
        /// The failure, naming the setting by its configuration key (<see cref="ConfigurationKeys"/>: before, nested settings
        /// read <c>Summaries:Llm.Endpoint</c> and a variant's <c>Summaries:Variants[0].Value.Summarizer</c>, without its name).
        /// </summary>
        private string Describe(TOptions options, FluentValidation.Results.ValidationFailure failure)
        {
            var key = ConfigurationKeys.Of(options, failure.PropertyName) is { Length: > 0 } path ? $"{section}:{path}" : section;
            return $"Configuration '{key}': {WithoutFinalPeriod(failure.ErrorMessage)}{Was(key, failure)}.";
        }

        /// <summary>
        /// FluentValidation's default messages are sentences (<c>'Default Page Size' must be greater than '0'.</c>), as are
        /// some of ours. The refusal ends in one period of its own, after the value, so the message loses its: it read
        /// "must be greater than '0'. (was '0')."
        /// </summary>
        private static string WithoutFinalPeriod(string message)
            => message.EndsWith('.') && !message.EndsWith("..", StringComparison.Ordinal) ? message[..^1] : message;

        /// <summary>
        /// The value refused, for the operator to see what was read; never a secret's (a failed start is printed, to the
        /// console and the logs), and a URL without its user information and query.
        /// </summary>
        private static string Was(string key, FluentValidation.Results.ValidationFailure failure)
            => failure.AttemptedValue is TOptions
                ? "" // a rule over several settings: no one value to show (it printed the options class's name)
                : SecretSettings.IsSecretPath(key)
                ? " (the value is not shown: it is a secret)"
                : $" (was '{SecretSettings.Scrubbed(Convert.ToString(failure.AttemptedValue, System.Globalization.CultureInfo.InvariantCulture) ?? "")}')";
    }
}
