"""The platform's maxima and defaults: staff's `PlatformLimits` row, each empty field falling
back to its setting (`CUBEAI_LIMITS_MAX_*`, `CUBEAI_RATE_LIMIT_*`).

Read by the gate when it resolves a domain's limits (so a change reaches every process
within `CUBEAI_LIMITS_CACHE_SECONDS`, with the limits themselves) and by the services that
validate what domain admins set. A domain's or a token's value saved before a maximum was
lowered stays stored; the gate clamps it to the maximum, and saving it again is refused.
"""

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True, slots=True)
class Platform:
    """The maxima and defaults in force."""

    max_requests_per_minute: int
    max_tokens_per_minute: int
    max_concurrent_streams: int
    max_monthly_token_budget: int
    domain_requests_per_minute: int
    domain_tokens_per_minute: int
    token_requests_per_minute: int
    token_tokens_per_minute: int
    token_concurrent_streams: int

    def problems(self) -> dict[str, list[str]]:
        """A field error for each default above its maximum."""
        bounds = (
            ("domain_requests_per_minute", "max_requests_per_minute"),
            ("token_requests_per_minute", "max_requests_per_minute"),
            ("domain_tokens_per_minute", "max_tokens_per_minute"),
            ("token_tokens_per_minute", "max_tokens_per_minute"),
            ("token_concurrent_streams", "max_concurrent_streams"),
        )
        errors: dict[str, list[str]] = {}
        for default, maximum in bounds:
            value, top = getattr(self, default), getattr(self, maximum)
            if value > top:
                errors.setdefault(default, []).append(
                    f"The default ({value}) must not be above the maximum ({top}): lower it "
                    "or raise the maximum."
                )
        return errors


def _from_settings() -> dict[str, int]:
    s = settings
    return {
        "max_requests_per_minute": s.CUBEAI_LIMITS_MAX_RPM,
        "max_tokens_per_minute": s.CUBEAI_LIMITS_MAX_TPM,
        "max_concurrent_streams": s.CUBEAI_LIMITS_MAX_STREAMS,
        "max_monthly_token_budget": s.CUBEAI_LIMITS_MAX_MONTHLY_TOKENS,
        "domain_requests_per_minute": s.CUBEAI_RATE_LIMIT_DOMAIN_RPM,
        "domain_tokens_per_minute": s.CUBEAI_RATE_LIMIT_DOMAIN_TPM,
        "token_requests_per_minute": s.CUBEAI_RATE_LIMIT_TOKEN_RPM,
        "token_tokens_per_minute": s.CUBEAI_RATE_LIMIT_TOKEN_TPM,
        "token_concurrent_streams": s.CUBEAI_RATE_LIMIT_TOKEN_STREAMS,
    }


def platform_limits(row=None) -> Platform:
    """The maxima and defaults in force: `row` (else the stored `PlatformLimits`, if any)
    over the settings. A database read; the gate caches what it resolves from it."""
    from limits.models import PlatformLimits

    values = _from_settings()
    if row is None:
        row = PlatformLimits.objects.filter(pk=1).first()
    if row is not None:
        for name in values:
            stored = getattr(row, name)
            if stored is not None:
                values[name] = stored
    return Platform(**values)
