"""Serializers of the inference management API: the registry, model access, attestation
policies and usage queries."""

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from inference.attestation import selectors as attestation_selectors
from inference.models import AttestationPolicy, Backend, Deployment, Model


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
    document = serializers.JSONField()


class UsageQuery(serializers.Serializer):
    days = serializers.ChoiceField(choices=[1, 7, 30, 90], default=7)
