"""Guardrail policies: the platform default and each domain's, versioned."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from domains.models import Domain


class GuardrailPolicy(models.Model):
    """One version of a policy; at most one version is active per domain (or platform)."""

    domain = models.ForeignKey(
        Domain,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="guardrail_policies",
        help_text="Empty for the platform default.",
    )
    version = models.PositiveIntegerField()
    document = models.JSONField(help_text="The policy, as guardrails.Policy JSON.")
    active = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["domain", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "version"], name="unique_policy_version"),
            models.UniqueConstraint(
                fields=["domain"], condition=models.Q(active=True), name="one_active_policy"
            ),
            models.UniqueConstraint(
                fields=["version"],
                condition=models.Q(domain=None),
                name="unique_platform_policy_version",
            ),
            models.UniqueConstraint(
                fields=["active"],
                condition=models.Q(domain=None, active=True),
                name="one_active_platform_policy",
            ),
        ]

    def __str__(self) -> str:
        scope = self.domain or "platform"
        return f"{scope} v{self.version}{' (active)' if self.active else ''}"

    def clean(self) -> None:
        from guardrails import PolicyError, validate_policy

        try:
            validate_policy({**self.document, "version": self.version})
        except PolicyError as exc:
            raise ValidationError(
                {"document": [f"{e['field']}: {e['message']}" for e in exc.errors]}
            ) from None
        except TypeError:
            raise ValidationError({"document": ["The policy must be a JSON object."]}) from None

    @property
    def policy(self):
        from guardrails import validate_policy

        return validate_policy({**self.document, "version": self.version})
