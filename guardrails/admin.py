"""The platform staff's console for the platform default policy and every domain's policy.

Saving goes through the model's `clean()` (the guardrails validator, unsafe regexes
included); a new row takes the next version number, and activating a row deactivates the
scope's other active version, both in the services.
"""

import json

from django import forms
from django.contrib import admin, messages

from cubeai import jsonbody
from cubeai.exceptions import DomainError
from domains.selectors import Actor
from guardrails import services
from guardrails.models import GuardrailPolicy


class PlatformFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request, model_admin):
        return [("platform", "Platform default"), ("domain", "Domains")]

    def queryset(self, request, queryset):
        if self.value() == "platform":
            return queryset.filter(domain=None)
        if self.value() == "domain":
            return queryset.exclude(domain=None)
        return queryset


class GuardrailPolicyForm(forms.ModelForm):
    """The document as indented JSON; the version is assigned on save for new rows."""

    # Not the model's `active`: a new active row would clash with the scope's active version
    # in the form's constraint check; the service switches them over in one transaction.
    activate = forms.BooleanField(required=False, initial=True, help_text="Put it in force now.")

    class Meta:
        model = GuardrailPolicy
        fields = ["domain", "version", "document"]
        widgets = {"document": forms.Textarea(attrs={"rows": 30, "cols": 100})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "version" in self.fields:
            self.fields["version"].required = False
            self.fields["version"].help_text = "Left empty, a new row takes the next version."

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is None and "version" in self.fields and not cleaned.get("version"):
            rows = GuardrailPolicy.objects.filter(domain=cleaned.get("domain"))
            cleaned["version"] = max(rows.values_list("version", flat=True), default=0) + 1
            self.instance.version = cleaned["version"]
        return cleaned


@admin.register(GuardrailPolicy)
class GuardrailPolicyAdmin(admin.ModelAdmin):
    form = GuardrailPolicyForm
    formfield_overrides = jsonbody.ADMIN_FORMFIELDS
    list_display = ["__str__", "domain", "version", "active", "created_by", "created_at"]
    list_filter = [PlatformFilter, "active"]
    search_fields = ["domain__name", "domain__route"]
    autocomplete_fields = ["domain"]
    readonly_fields = ["created_by", "created_at"]
    actions = ["activate"]

    def get_readonly_fields(self, request, obj=None):
        # A saved version is a record: change it by saving a new version.
        if obj is not None:
            return [*self.readonly_fields, "domain", "version", "document", "active"]
        return self.readonly_fields

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return [f for f in fields if f != "activate"] if obj is not None else fields

    def has_delete_permission(self, request, obj=None) -> bool:
        # An active version cannot be deleted from under the gateway.
        return super().has_delete_permission(request, obj) and not (obj and obj.active)

    def save_model(self, request, obj, form, change):
        if change:
            return
        actor = Actor.staff(request.user)
        row = services.policy_save(
            domain=obj.domain,
            document=obj.document,
            actor=actor,
            activate=form.cleaned_data.get("activate", False),
        )
        # The admin shows the saved row afterwards.
        obj.pk, obj.version, obj.document = row.pk, row.version, row.document
        obj.created_at, obj.created_by, obj.active = row.created_at, row.created_by, row.active

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "document" and field is not None:
            field.encoder = None
            field.prepare_value = lambda value: (
                json.dumps(value, indent=2) if isinstance(value, dict) else value
            )
        return field

    @admin.action(description="Activate the selected version")
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version.", messages.ERROR)
            return
        row = queryset.get()
        try:
            services.policy_activate(
                domain=row.domain, version=row.version, actor=Actor.staff(request.user)
            )
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"{row} is now active.")
