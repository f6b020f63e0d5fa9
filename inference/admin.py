"""The admin console for the model registry and attestation.

Attestation policies are versioned: a version is never edited. "Add" on the policy page
creates the next version of the chosen backend's policy (through the same service as the
management API), which becomes the active one.
"""

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.utils import timezone

from cubeai import jsonbody
from cubeai.exceptions import DomainError
from inference import attestation as att
from inference import credentials
from inference.attestation import challenge
from inference.attestation import services as attestation_services
from inference.models import (
    AttestationPolicy,
    AttestationRecord,
    Backend,
    Deployment,
    Model,
    ModelAccess,
)


class BackendForm(forms.ModelForm):
    """The backend, and a credential to store (encrypted; never shown again)."""

    new_credential = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        label="Set credential",
        help_text=(
            "The credential the platform sends this backend, stored encrypted; it replaces "
            "the variable below. Leave empty to keep the current one."
        ),
    )

    class Meta:
        model = Backend
        fields = [
            "name", "base_url", "kind", "tee_type", "allow_not_confidential", "enabled",
            "provision_credential", "api_key_env",
        ]  # fmt: skip

    def clean(self):
        data = super().clean()
        problem = (
            credentials.credential_problem(data["new_credential"])
            if data.get("new_credential")
            else None
        )
        if problem:
            self.add_error("new_credential", problem)
        elif data.get("new_credential") and data.get("provision_credential"):
            self.add_error(
                "new_credential", "A provisioned agent's credential is generated: rotate it."
            )
        elif data.get("new_credential") and data.get("api_key_env"):
            self.add_error("api_key_env", "Either a stored credential or a variable, not both.")
        return data


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    form = BackendForm
    list_display = [
        "name",
        "kind",
        "tee_type",
        "attestation_status",
        "attested_at",
        "attestation_expires_at",
        "healthy",
        "enabled",
    ]
    list_filter = ["tee_type", "attestation_status", "healthy", "enabled"]
    search_fields = ["name", "base_url"]
    readonly_fields = [
        "healthy",
        "health_checked_at",
        "health_error",
        "attestation_status",
        "attested_at",
        "attestation_expires_at",
        "attestation_error",
        "pinned_key_sha256",
        "credential_state",
        "created_at",
        "updated_at",
    ]
    actions = ["attest_now", "rotate_credential"]

    @admin.display(description="credential")
    def credential_state(self, obj):
        if obj.credential:
            when = (
                f", rotated {obj.credential_rotated_at:%Y-%m-%d %H:%M}"
                if obj.credential_rotated_at
                else ""
            )
            return f"stored (version {obj.credential_version}{when})"
        if obj.api_key_env:
            return f"read from ${obj.api_key_env}"
        return "none"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("new_credential"):
            credentials.backend_credential_set(
                backend=obj, credential=form.cleaned_data["new_credential"]
            )
        elif obj.provision_credential and not obj.credential:
            credentials.backend_credential_set(
                backend=obj, credential=credentials.credential_generate()
            )

    @admin.action(description="Rotate the credential (the old one ends after the grace period)")
    def rotate_credential(self, request, queryset):
        grace = settings.CUBEAI_BACKEND_CREDENTIAL_GRACE_SECONDS
        for backend in queryset:
            try:
                credentials.backend_credential_rotate(backend=backend, grace_seconds=grace)
            except DomainError as exc:
                self.message_user(
                    request, f"{backend}: not rotated — {exc.message}", messages.ERROR
                )
            else:
                self.message_user(
                    request,
                    f"{backend}: new credential in force; the old one ends in {grace} s.",
                    messages.SUCCESS,
                )

    @admin.action(description="Attest now (run the challenge)")
    def attest_now(self, request, queryset):
        for backend in queryset:
            record = attestation_services.backend_attest(
                backend=backend, trigger=AttestationRecord.Trigger.ON_DEMAND
            )
            if record.ok:
                self.message_user(request, f"{backend}: attested.", messages.SUCCESS)
            else:
                reasons = "; ".join(f"{f['code']}: {f['message']}" for f in record.failures)
                self.message_user(request, f"{backend}: FAILED — {reasons}", messages.ERROR)


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    formfield_overrides = jsonbody.ADMIN_FORMFIELDS
    list_display = ["name", "public", "owned_by", "context_length", "created_at"]
    search_fields = ["name"]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["model", "backend", "upstream_model", "enabled"]
    list_filter = ["enabled", "backend"]


@admin.register(ModelAccess)
class ModelAccessAdmin(admin.ModelAdmin):
    list_display = ["domain", "model", "allowed"]
    list_filter = ["allowed"]


class PolicyVersionForm(forms.ModelForm):
    """A new policy version: the backend and the JSON document, validated by the service."""

    document = jsonbody.JSONFormField(
        help_text=(
            'SEV-SNP: {"measurements": ["<96 hex>"], "min_tcb": {"Genoa": {"bootloader": 10, '
            '"tee": 0, "snp": 23, "microcode": 84}} (or "any"), ...}; '
            'TDX: {"mrtds": ["<96 hex>"], ...}; none: {"allow_insecure": true}.'
        ),
        widget=forms.Textarea(attrs={"rows": 12, "cols": 90}),
    )

    class Meta:
        model = AttestationPolicy
        fields = ["backend", "document"]

    def clean(self):
        data = super().clean()
        backend, document = data.get("backend"), data.get("document")
        if backend is not None and document is not None:
            from pydantic import ValidationError

            try:
                att_policy = att.policy_from_json(challenge.tee_of(backend), document)
            except (ValidationError, TypeError, ValueError) as exc:
                raise forms.ValidationError({"document": str(exc)}) from None
            data["document"] = att_policy.model_dump(mode="json")
        return data


@admin.register(AttestationPolicy)
class AttestationPolicyAdmin(admin.ModelAdmin):
    list_display = ["backend", "version", "tee_type", "active", "created_by", "created_at"]
    list_filter = ["active", "tee_type", "backend"]
    ordering = ["backend", "-version"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = PolicyVersionForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["backend", "version", "tee_type", "document_json", "active", "created_by"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["backend", "document"]
        return ["backend", "version", "tee_type", "document_json", "active", "created_by"]

    @admin.display(description="document")
    def document_json(self, obj):
        from django.utils.html import format_html

        return format_html("<pre>{}</pre>", json.dumps(obj.document, indent=2, sort_keys=True))

    def has_change_permission(self, request, obj=None):
        # Versions are immutable; viewing is allowed, saving a change is not.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        row = attestation_services.attestation_policy_set(
            backend=form.cleaned_data["backend"],
            document=form.cleaned_data["document"],
            actor=request.user,
        )
        attestation_services.reattest_later(backend=row.backend)
        # The admin goes on with `obj`, so it must be the row the service wrote.
        obj.pk, obj.version, obj.created_at = row.pk, row.version, row.created_at or timezone.now()
        obj.tee_type, obj.active, obj.created_by = row.tee_type, row.active, row.created_by


@admin.register(AttestationRecord)
class AttestationRecordAdmin(admin.ModelAdmin):
    list_display = ["backend", "at", "ok", "trigger", "tee_type", "policy_version"]
    list_filter = ["ok", "trigger", "tee_type", "backend"]
    date_hierarchy = "at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
