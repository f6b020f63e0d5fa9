"""The limits page's forms; the services validate (ranges, maxima) once for every entry."""

from django import forms

from limits.models import FailureMode


def _number(label: str, help_text: str) -> forms.IntegerField:
    # No min/max here: the service refuses out-of-range values with the same messages as
    # the management API's, and they come back on the field.
    return forms.IntegerField(required=False, label=label, help_text=help_text)


class DomainLimitsForm(forms.Form):
    requests_per_minute = _number(
        "Requests per minute (domain)", "All tokens together. Empty: the platform default."
    )
    tokens_per_minute = _number(
        "Tokens per minute (domain)", "Prompt and completion tokens, all tokens together."
    )
    monthly_token_budget = _number(
        "Monthly token budget (domain)", "Empty: no budget. Renews on the 1st (UTC)."
    )
    token_requests_per_minute = _number("Requests per minute (each token)", "")
    token_tokens_per_minute = _number("Tokens per minute (each token)", "")
    token_concurrent_streams = _number("Concurrent streams (each token)", "")
    token_monthly_token_budget = _number("Monthly token budget (each token)", "Empty: none.")
    failure_mode = forms.ChoiceField(
        choices=FailureMode.choices,
        label="While Redis is unreachable",
        help_text="Fail open keeps serving on approximate local limits; fail closed answers 503.",
    )


def _token_field() -> forms.TypedChoiceField:
    return forms.TypedChoiceField(
        label="Token",
        coerce=int,
        help_text="A token of a member of this domain that may act in it.",
        error_messages={"invalid_choice": "Choose a token that may act in this domain."},
    )


def _token_choices(domain) -> list[tuple[int | str, str]]:
    from limits.selectors import domain_tokens

    tokens = [(t.pk, f"{t.name} ({t.owner.email})") for t in domain_tokens(domain=domain)]
    return [("", "Choose a token"), *tokens]


class TokenLimitsForm(forms.Form):
    token = _token_field()
    requests_per_minute = _number("Requests per minute", "Empty: the domain's per-token value.")
    tokens_per_minute = _number("Tokens per minute", "")
    concurrent_streams = _number("Concurrent streams", "")
    monthly_token_budget = _number("Monthly token budget", "Empty: none.")

    def __init__(self, *args, domain, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["token"].choices = _token_choices(domain)


class TokenLimitsClearForm(forms.Form):
    """Return one token to the domain's per-token values (its own limits removed)."""

    token = _token_field()

    def __init__(self, *args, domain, **kwargs):
        super().__init__(*args, **kwargs)
        from limits.models import TokenLimits

        own = TokenLimits.objects.filter(domain=domain).select_related("token")
        self.fields["token"].choices = [(row.token_id, row.token.name) for row in own]
        self.fields["token"].error_messages["invalid_choice"] = (
            "This token has no limits of its own in this domain."
        )
