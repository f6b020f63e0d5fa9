"""Platform staff edit any domain's limits here; the same validation as the page's."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from limits import services
from limits.models import DomainLimits, TokenLimits


def _validate(form: forms.ModelForm, fields: tuple[str, ...]) -> None:
    try:
        services.clean_values({f: form.cleaned_data.get(f) for f in fields}, fields)
    except services.Invalid as exc:
        raise ValidationError({field: messages for field, messages in exc.errors.items()}) from None


class DomainLimitsForm(forms.ModelForm):
    def clean(self):
        cleaned = super().clean()
        _validate(self, services.DOMAIN_FIELDS)
        return cleaned


class TokenLimitsForm(forms.ModelForm):
    def clean(self):
        cleaned = super().clean()
        _validate(self, services.TOKEN_FIELDS)
        return cleaned


@admin.register(DomainLimits)
class DomainLimitsAdmin(admin.ModelAdmin):
    form = DomainLimitsForm
    list_display = (
        "domain",
        "requests_per_minute",
        "tokens_per_minute",
        "monthly_token_budget",
        "failure_mode",
        "updated_at",
    )
    search_fields = ("domain__name", "domain__route")
    raw_id_fields = ("domain",)


@admin.register(TokenLimits)
class TokenLimitsAdmin(admin.ModelAdmin):
    form = TokenLimitsForm
    list_display = ("token", "domain", "requests_per_minute", "tokens_per_minute", "updated_at")
    raw_id_fields = ("domain", "token")
