"""Limits and quotas a domain's admins set, within the platform's maxima.

An empty field means "the platform default" (`CUBEAI_LIMITS_DEFAULT_*`) for rates, and "no
budget" for monthly budgets. `TokenLimits` overrides the domain's per-token values for one
token acting in this domain (a token may act in several domains, each with its own limits).
"""

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
