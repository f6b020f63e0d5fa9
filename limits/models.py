"""Limits and quotas a domain's admins set, within the platform's maxima.

An empty field means "the platform default" (`PlatformLimits`, else `CUBEAI_RATE_LIMIT_*`)
for rates, and "no budget" for monthly budgets. `TokenLimits` overrides the domain's per-token values for one
token acting in this domain (a token may act in several domains, each with its own limits).
"""

from django.core.validators import MinValueValidator
from django.db import models

from domains.models import Domain


class FailureMode(models.TextChoices):
    """What the gateway does for this domain while Redis is unreachable."""

    OPEN = "open", "Fail open: local approximate limits per process"
    CLOSED = "closed", "Fail closed: 503 with Retry-After"


class DomainLimits(models.Model):
    domain = models.OneToOneField(Domain, on_delete=models.CASCADE, related_name="limits")
    # The domain as a whole, all its tokens together.
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    monthly_token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    # Each token in this domain, unless a TokenLimits row says otherwise.
    token_requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    token_tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    token_concurrent_streams = models.PositiveIntegerField(null=True, blank=True)
    token_monthly_token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    failure_mode = models.CharField(
        max_length=6, choices=FailureMode.choices, default=FailureMode.OPEN
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "domain limits"

    def __str__(self) -> str:
        return f"limits of {self.domain}"


class TokenLimits(models.Model):
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="token_limits")
    token = models.ForeignKey("tokens.Token", on_delete=models.CASCADE, related_name="+")
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    concurrent_streams = models.PositiveIntegerField(null=True, blank=True)
    monthly_token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "token limits"
        constraints = [
            models.UniqueConstraint(fields=["domain", "token"], name="limits_one_row_per_token")
        ]

    def __str__(self) -> str:
        return f"limits of token {self.token_id} in {self.domain}"


def _platform_value(help_text: str, *, big: bool = False):
    field = models.PositiveBigIntegerField if big else models.PositiveIntegerField
    return field(null=True, blank=True, validators=[MinValueValidator(1)], help_text=help_text)


class PlatformLimits(models.Model):
    """The platform's maxima and defaults, set by staff in the admin (one row; an empty
    field: its `CUBEAI_LIMITS_MAX_*` / `CUBEAI_RATE_LIMIT_*` setting)."""

    max_requests_per_minute = _platform_value("Empty: CUBEAI_LIMITS_MAX_RPM.")
    max_tokens_per_minute = _platform_value("Empty: CUBEAI_LIMITS_MAX_TPM.")
    max_concurrent_streams = _platform_value("Empty: CUBEAI_LIMITS_MAX_STREAMS.")
    max_monthly_token_budget = _platform_value("Empty: CUBEAI_LIMITS_MAX_MONTHLY_TOKENS.", big=True)
    domain_requests_per_minute = _platform_value("Default. Empty: CUBEAI_RATE_LIMIT_DOMAIN_RPM.")
    domain_tokens_per_minute = _platform_value("Default. Empty: CUBEAI_RATE_LIMIT_DOMAIN_TPM.")
    token_requests_per_minute = _platform_value("Default. Empty: CUBEAI_RATE_LIMIT_TOKEN_RPM.")
    token_tokens_per_minute = _platform_value("Default. Empty: CUBEAI_RATE_LIMIT_TOKEN_TPM.")
    token_concurrent_streams = _platform_value("Default. Empty: CUBEAI_RATE_LIMIT_TOKEN_STREAMS.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "platform limits"

    def __str__(self) -> str:
        return "platform limits"

    def save(self, *args, **kwargs) -> None:
        self.pk = 1  # one row
        super().save(*args, **kwargs)

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from limits.platform import platform_limits

        problems = platform_limits(self).problems()
        if problems:
            raise ValidationError(problems)
