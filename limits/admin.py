"""Platform staff edit any domain's limits here, with the same validation as the page's, and
the platform's own maxima and defaults (`PlatformLimits`, one row)."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from limits import services
from limits.models import DomainLimits, PlatformLimits, TokenLimits


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


@admin.register(PlatformLimits)
class PlatformLimitsAdmin(admin.ModelAdmin):
    """The one row of platform maxima and defaults; its form refuses a default above its
    maximum (`PlatformLimits.clean`). Every process applies a change within
    CUBEAI_LIMITS_CACHE_SECONDS."""

    fieldsets = (
        (
            "Maxima (what a domain's admins may set; empty: the CUBEAI_LIMITS_MAX_* setting)",
            {
                "fields": (
                    "max_requests_per_minute",
                    "max_tokens_per_minute",
                    "max_concurrent_streams",
                    "max_monthly_token_budget",
                )
            },
        ),
        (
            "Defaults (where a domain sets nothing; empty: the CUBEAI_RATE_LIMIT_* setting)",
            {
                "fields": (
                    "domain_requests_per_minute",
                    "domain_tokens_per_minute",
                    "token_requests_per_minute",
                    "token_tokens_per_minute",
                    "token_concurrent_streams",
                )
            },
        ),
    )
    list_display = ("__str__", "max_requests_per_minute", "max_tokens_per_minute", "updated_at")

    def has_add_permission(self, request) -> bool:
        return super().has_add_permission(request) and not PlatformLimits.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        # Emptying its fields returns to the settings; the row itself stays.
        return False
