using FluentValidation;
using Mediator;

namespace ModularChat.BuildingBlocks.Validation;

/// <summary>
/// Runs every FluentValidation validator of a command or query before its handler,
/// so a handler only ever sees valid input. Failures surface as a 400 (or 422 for
/// exceeded limits) ProblemDetails through the exception handler.
/// </summary>
public sealed class ValidationBehavior<TMessage, TResponse>(IEnumerable<IValidator<TMessage>> validators)
    : IPipelineBehavior<TMessage, TResponse>
    where TMessage : IMessage
{
    private readonly IValidator<TMessage>[] _validators = validators.ToArray();

    public async ValueTask<TResponse> Handle(TMessage message, MessageHandlerDelegate<TMessage, TResponse> next, CancellationToken cancellationToken)
    {
        if (_validators.Length > 0)
        {
            var context = new ValidationContext<TMessage>(message);
            List<FluentValidation.Results.ValidationFailure>? failures = null;
            foreach (var validator in _validators)
            {
                var result = await validator.ValidateAsync(context, cancellationToken).ConfigureAwait(false);
                if (!result.IsValid)
                {
                    (failures ??= []).AddRange(result.Errors);
                }
            }

            if (failures is not null)
            {
                throw new ValidationException(failures);
            }
        }

        return await next(message, cancellationToken).ConfigureAwait(false);
    }
}
