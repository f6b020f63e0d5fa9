"""Serializers of the inference management API: the registry, model access, attestation
policies and usage queries."""

from django.core.exceptions import ValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from domains.drf import JSONField
from inference.attestation import selectors as attestation_selectors
from inference.models import AttestationPolicy, Backend, Deployment, Model
from inference.usage import MAX_RANGE_DAYS, Period


class ModelAccessOut(serializers.Serializer):
    name = serializers.CharField()
    public = serializers.BooleanField()
    allowed = serializers.BooleanField()
    override = serializers.BooleanField(allow_null=True)
    description = serializers.CharField()


class ModelAccessIn(serializers.Serializer):
    model = serializers.CharField(max_length=128)
    allowed = serializers.BooleanField(allow_null=True)


class FullCleanMixin:
    """Run the model's own validation (clean, validators) before saving."""

    def validate(self, attrs):
        instance = self.Meta.model(**{**self._current(), **attrs})
        try:
            instance.full_clean(exclude=self._exclude_from_clean())
        except ValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs

    def _current(self) -> dict:
        if self.instance is None:
            return {}
        return {
            field.name: getattr(self.instance, field.name)
            for field in self.Meta.model._meta.concrete_fields
            if not field.primary_key
        }

    def _exclude_from_clean(self) -> list[str]:
        # Uniqueness is checked by the serializer's own validators and the database.
        return ["id"]


class BackendSerializer(FullCleanMixin, serializers.ModelSerializer):
    class Meta:
        model = Backend
        fields = [
            "id", "name", "base_url", "kind", "api_key_env", "provision_credential",
            "credential_version", "credential_rotated_at", "tee_type",
            "allow_not_confidential", "enabled", "healthy", "health_checked_at",
            "health_error", "attestation_status", "attested_at", "attestation_expires_at",
            "attestation_error", "pinned_key_sha256", "created_at", "updated_at",
        ]  # fmt: skip
        # The credential itself is never shown; its version says when it changed.
        read_only_fields = [
            "credential_version", "credential_rotated_at",
            "healthy", "health_checked_at", "health_error", "attestation_status",
            "attested_at", "attestation_expires_at", "attestation_error",
            "pinned_key_sha256", "created_at", "updated_at",
        ]  # fmt: skip


class ModelSerializer(FullCleanMixin, serializers.ModelSerializer):
    class Meta:
        model = Model
        fields = [
            "id", "name", "tasks", "context_length", "capabilities", "public", "owned_by",
            "description", "created_at",
        ]  # fmt: skip
        read_only_fields = ["created_at"]


class DeploymentSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", queryset=Model.objects.all())
    backend = serializers.SlugRelatedField(slug_field="name", queryset=Backend.objects.all())

    class Meta:
        model = Deployment
        fields = ["id", "model", "backend", "upstream_model", "enabled"]


class PolicyFieldOut(serializers.Serializer):
    """One policy field: pinned, or open with a warning saying what it lets through."""

    field = serializers.CharField()
    value = serializers.JSONField(allow_null=True)
    pinned = serializers.BooleanField()
    warning = serializers.CharField(allow_null=True)


class AttestationPolicyVersionOut(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="email", read_only=True)
    policy_fields = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()

    class Meta:
        model = AttestationPolicy
        fields = [
            "version",
            "tee_type",
            "document",
            "active",
            "created_by",
            "created_at",
            "policy_fields",
            "warnings",
        ]

    def _review(self, row: AttestationPolicy) -> dict:
        return attestation_selectors.policy_fields(tee_type=row.tee_type, document=row.document)

    @extend_schema_field(PolicyFieldOut(many=True))
    def get_policy_fields(self, row: AttestationPolicy) -> list[dict]:
        return self._review(row)["policy_fields"]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_warnings(self, row: AttestationPolicy) -> list[str]:
        return self._review(row)["warnings"]


class AttestationPolicyIn(serializers.Serializer):
    document = JSONField()


class UsageQuery(serializers.Serializer):
    """The period: the last `days` days, or `start` to `end` (dates, UTC, inclusive)."""

    days = serializers.ChoiceField(choices=[1, 7, 30, 90, 365], default=7)
    start = serializers.DateField(required=False)
    end = serializers.DateField(required=False)

    def validate(self, attrs):
        start, end = attrs.get("start"), attrs.get("end")
        if start is None and end is None:
            attrs["period"] = Period.last(attrs["days"])
            return attrs
        if start is None:
            raise serializers.ValidationError({"start": ["Required with `end`."]})
        end = end or timezone.localdate()
        if start > end:
            raise serializers.ValidationError({"end": ["Must not be before `start`."]})
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise serializers.ValidationError({"start": [f"At most {MAX_RANGE_DAYS} days."]})
        attrs["period"] = Period(start, end)
        return attrs


class UsageMeasuresOut(serializers.Serializer):
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    avg_latency_ms = serializers.FloatField()
    p50_latency_ms = serializers.FloatField(allow_null=True)
    p95_latency_ms = serializers.FloatField(allow_null=True)


class UsageDayOut(UsageMeasuresOut):
    day = serializers.DateField()


class UsageModelOut(UsageMeasuresOut):
    model = serializers.CharField(help_text='"unknown model" for models the domain may not use.')
    known = serializers.BooleanField()


class UsageTokenOut(UsageMeasuresOut):
    token_id = serializers.IntegerField(allow_null=True)
    token_name = serializers.CharField()


class UsageMemberOut(UsageMeasuresOut):
    user_id = serializers.IntegerField(allow_null=True)
    member = serializers.CharField()


class UsageReportOut(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    days = serializers.IntegerField()
    scope = serializers.ChoiceField(choices=["own", "domain"])
    totals = UsageMeasuresOut()
    series = UsageDayOut(many=True)
    by_model = UsageModelOut(many=True)
    by_token = UsageTokenOut(many=True)
    by_member = UsageMemberOut(many=True, help_text="Empty when the scope is `own`.")


class UsageExportRowOut(UsageMeasuresOut):
    day = serializers.DateField()
    model = serializers.CharField()
    token = serializers.CharField(help_text="The token's name.")
    member = serializers.CharField(help_text="The member's email (empty without one).")


class RequestAuditQuery(serializers.Serializer):
    """The per-request audit log's filters (all optional)."""

    actor = serializers.EmailField(required=False, help_text="The caller's email.")
    token = serializers.CharField(required=False, max_length=100, help_text="A token's name.")
    model = serializers.CharField(
        required=False, max_length=128, help_text='A model, or "unknown model".'
    )
    outcome = serializers.ChoiceField(choices=["success", "error", "blocked"], required=False)
    start = serializers.DateField(required=False, help_text="First day (UTC), inclusive.")
    end = serializers.DateField(required=False, help_text="Last day (UTC), inclusive.")

    def validate(self, attrs):
        if attrs.get("start") and attrs.get("end") and attrs["start"] > attrs["end"]:
            raise serializers.ValidationError({"end": ["Must not be before `start`."]})
        return attrs


class RequestRecordOut(serializers.Serializer):
    created_at = serializers.DateTimeField()
    request_id = serializers.CharField()
    actor = serializers.CharField(help_text="The caller's email.")
    token_id = serializers.IntegerField(allow_null=True)
    token = serializers.CharField(help_text="The token's name.")
    endpoint = serializers.CharField()
    model = serializers.CharField(help_text='"unknown model" for names no model has.')
    backend = serializers.CharField()
    status = serializers.IntegerField()
    guardrails = serializers.CharField(help_text="allowed, masked, blocked (or empty).")
    attestation = serializers.CharField()
    latency_ms = serializers.FloatField()
    total_tokens = serializers.IntegerField()
