"""The model registry (backends, models, deployments), per-domain model access and usage."""

import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from domains.models import Domain

slug_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$",
    "Use letters, digits, dots, dashes, colons, slashes and underscores.",
)


# The only variables a backend's credential may be read from (inference/credentials.py).
API_KEY_ENV_PATTERN = r"^CUBEAI_BACKEND_KEY_[A-Z0-9_]+$"


class Backend(models.Model):
    """An OpenAI-compatible server (usually an agent inside a TEE) that serves models."""

    class Kind(models.TextChoices):
        AGENT = "agent"
        VLLM = "vllm"
        OLLAMA = "ollama"
        OPENAI = "openai", "generic OpenAI-compatible"

    class TeeType(models.TextChoices):
        NONE = "none", "none (not confidential)"
        SEV_SNP = "sev-snp", "AMD SEV-SNP"
        TDX = "tdx", "Intel TDX"

    class Attestation(models.TextChoices):
        UNVERIFIED = "unverified"
        VERIFIED = "verified"
        FAILED = "failed"
        NOT_CONFIDENTIAL = "not-confidential"

    name = models.CharField(max_length=100, unique=True, validators=[slug_validator])
    base_url = models.URLField(max_length=500, help_text="Up to and including /v1.")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.AGENT)
    # The backend's credential, sent as `Authorization: Bearer`: read from a variable named
    # CUBEAI_BACKEND_KEY_* (never any other, so no platform secret can be pointed at), or
    # stored encrypted in `credential` (see inference/credentials.py).
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        validators=[
            RegexValidator(
                API_KEY_ENV_PATTERN,
                "The name of an environment variable starting with CUBEAI_BACKEND_KEY_.",
            )
        ],
    )
    credential = models.TextField(blank=True, editable=False)
    credential_version = models.PositiveBigIntegerField(default=0, editable=False)
    credential_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # An agent whose credential the platform generates and sends it after each passed
    # attestation challenge (agent/README.md).
    provision_credential = models.BooleanField(
        default=False,
        help_text="Generate this agent's credential and send it to the agent after attestation.",
    )
    tee_type = models.CharField(max_length=10, choices=TeeType.choices, default=TeeType.NONE)
    # Only an explicit operator choice lets a backend without a TEE serve traffic.
    allow_not_confidential = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    healthy = models.BooleanField(default=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_error = models.CharField(max_length=200, blank=True)
    attestation_status = models.CharField(
        max_length=20, choices=Attestation.choices, default=Attestation.UNVERIFIED
    )
    attested_at = models.DateTimeField(null=True, blank=True)
    attestation_expires_at = models.DateTimeField(null=True, blank=True)
    attestation_error = models.CharField(max_length=500, blank=True)
    # SHA-256 of the attested TLS public key (DER); TLS connections must present this key.
    pinned_key_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.tee_type == self.TeeType.NONE and not self.allow_not_confidential and self.enabled:
            errors["allow_not_confidential"] = "A backend without a TEE must be marked as allowed."
        if self.provision_credential and self.kind != self.Kind.AGENT:
            errors["provision_credential"] = "Only an agent takes a provisioned credential."
        if self.provision_credential and self.api_key_env:
            errors["api_key_env"] = "A provisioned agent's credential is generated, not read."
        if errors:
            raise ValidationError(errors)


class Model(models.Model):
    """A model as clients name it, with the tasks it serves."""

    class Task(models.TextChoices):
        CHAT = "chat"
        COMPLETION = "completion"
        EMBEDDING = "embedding"
        TRANSCRIPTION = "transcription"
        TRANSLATION = "translation"

    name = models.CharField(max_length=128, unique=True, validators=[slug_validator])
    tasks = models.JSONField(default=list)
    context_length = models.PositiveIntegerField(default=2048)
    # Optional OpenAI features the deployments support; anything else is refused with a 400.
    capabilities = models.JSONField(default=list, blank=True)
    public = models.BooleanField(default=True, help_text="Every domain may use it by default.")
    owned_by = models.CharField(max_length=64, default="cube-ai")
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    CAPABILITIES = ("n", "tools", "logprobs", "response_format", "dimensions")

    def clean(self) -> None:
        unknown = set(self.tasks) - set(self.Task.values)
        if not self.tasks or unknown:
            raise ValidationError({"tasks": f"Choose tasks among {', '.join(self.Task.values)}."})
        if set(self.capabilities) - set(self.CAPABILITIES):
            raise ValidationError({"capabilities": f"Choose among {', '.join(self.CAPABILITIES)}."})


class Deployment(models.Model):
    """A model served by one backend under the backend's own model name."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="deployments")
    backend = models.ForeignKey(Backend, on_delete=models.CASCADE, related_name="deployments")
    upstream_model = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["model", "backend"]
        constraints = [
            models.UniqueConstraint(fields=["model", "backend"], name="unique_deployment")
        ]

    def __str__(self) -> str:
        return f"{self.model} on {self.backend}"


class ModelAccess(models.Model):
    """A domain's exception to the default: a private model granted, or a public one denied."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="model_access")
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="access")
    allowed = models.BooleanField(default=True)

    class Meta:
        ordering = ["domain", "model"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "model"], name="unique_model_access")
        ]

    def __str__(self) -> str:
        return f"{self.model} {'allowed' if self.allowed else 'denied'} in {self.domain}"


class UsageEvent(models.Model):
    """One API request as metered and audited: who, where, which model, how much. No content."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="usage_events")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    token_id = models.BigIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=64)
    endpoint = models.CharField(max_length=40)
    model = models.CharField(max_length=128, blank=True)
    backend = models.CharField(max_length=100, blank=True)
    status = models.PositiveSmallIntegerField()
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    # Who counted the tokens: the backend's own usage report, or the gateway (a stream that
    # ended before the backend reported, or a backend that reports none).
    usage_source = models.CharField(
        max_length=10, choices=[("backend", "backend"), ("gateway", "gateway")], default="backend"
    )
    latency_ms = models.FloatField(default=0)
    stream = models.BooleanField(default=False)
    guardrails = models.JSONField(default=dict, blank=True)
    attestation = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["domain", "created_at"])]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.model} {self.status}"


class AttestationPolicy(models.Model):
    """One version of a backend's attestation policy; exactly one version is active."""

    backend = models.ForeignKey(
        Backend, on_delete=models.CASCADE, related_name="attestation_policies"
    )
    version = models.PositiveIntegerField()
    tee_type = models.CharField(max_length=10, choices=Backend.TeeType.choices)
    # The policy as `inference.attestation.policy_from_json` accepts it, normalised.
    document = models.JSONField()
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["backend", "-version"]
        verbose_name_plural = "attestation policies"
        constraints = [
            models.UniqueConstraint(
                fields=["backend", "version"], name="unique_attestation_policy_version"
            ),
            models.UniqueConstraint(
                fields=["backend"], condition=Q(active=True), name="one_active_attestation_policy"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.backend} policy v{self.version}{' (active)' if self.active else ''}"


class AttestationRecord(models.Model):
    """One attestation challenge of a backend and its outcome; the evidence is not secret."""

    class Trigger(models.TextChoices):
        PERIODIC = "periodic"
        ON_DEMAND = "on-demand"
        KEY_CHANGE = "key-change"
        POLICY_CHANGE = "policy-change"
        CLIENT = "client"

    backend = models.ForeignKey(
        Backend, on_delete=models.CASCADE, related_name="attestation_records"
    )
    at = models.DateTimeField(db_index=True)
    ok = models.BooleanField()
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    tee_type = models.CharField(max_length=10, choices=Backend.TeeType.choices)
    # [{"code": ..., "message": ...}], empty when ok.
    failures = models.JSONField(default=list, blank=True)
    claims = models.JSONField(default=dict, blank=True)
    nonce = models.CharField(max_length=64)
    report_data = models.CharField(max_length=128, blank=True)
    # Base64 of the agent's TLS public key (DER SubjectPublicKeyInfo), the raw report or
    # quote, and the SNP certificate table or TDX collateral, exactly as the agent sent them.
    tls_public_key = models.TextField(blank=True)
    evidence = models.TextField(blank=True)
    auxblob = models.TextField(blank=True)
    cert_chain = models.JSONField(default=list, blank=True)
    key_sha256 = models.CharField(max_length=64, blank=True)
    policy_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["backend", "at"])]

    def __str__(self) -> str:
        return f"{self.backend} {'ok' if self.ok else 'failed'} at {self.at:%Y-%m-%d %H:%M:%S}"


class RegistryVersion(models.Model):
    """One row whose counter goes up with every change that routing sees (a backend, model,
    deployment, access rule or guardrail policy written): each process's routing snapshot
    is rebuilt only when it has moved (`inference.registry`). Bumped by `registry_changed`."""

    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"registry version {self.version}"


def registry_changed() -> None:
    """Mark the registry changed, inside the caller's transaction (so the new version is
    seen only with the rows that changed it)."""
    if not RegistryVersion.objects.filter(pk=1).update(version=models.F("version") + 1):
        # The row was deleted (a restore, a flushed table): start from the clock, never
        # again at a count a running process may still hold as its snapshot's version.
        RegistryVersion.objects.get_or_create(pk=1, defaults={"version": time.time_ns()})


# Upper bounds (milliseconds) of the latency histogram kept with each day's usage: enough
# resolution for p50 and p95 from aggregates alone; the last bucket holds everything slower.
LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)
LATENCY_FIELDS = tuple(f"latency_{i}" for i in range(len(LATENCY_BUCKETS_MS) + 1))


class UsageDaily(models.Model):
    """One day of a domain's usage per model, token and member: counts only, never content.

    Kept up to date by the metering flush (off the request path) and kept beyond the raw
    events' retention, so pages over a year of traffic read a few thousand rows.
    `model` is empty for requests that named no model the domain may use ("unknown model"),
    `token_id` and `user_id` are 0 when there was none.
    """

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    model = models.CharField(max_length=128, blank=True)
    token_id = models.BigIntegerField(default=0)
    user_id = models.BigIntegerField(default=0)
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0)

    class Meta:
        ordering = ["domain", "day"]
        verbose_name_plural = "usage per day"
        constraints = [
            models.UniqueConstraint(
                fields=["domain", "day", "model", "token_id", "user_id"], name="unique_usage_daily"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.model or 'unknown model'}: {self.requests} requests"


# The histogram's counts, one column each so concurrent flushes can add to them atomically.
for _name in LATENCY_FIELDS:
    UsageDaily.add_to_class(_name, models.PositiveBigIntegerField(default=0))


from inference.jobs.models import TranscriptionJob  # noqa: E402,F401  (its own module)
