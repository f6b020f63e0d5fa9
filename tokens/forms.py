"""Forms of the Profile → Personal Access Tokens pages.

They only parse what the browser sent; `tokens.services` decides what is allowed, and its
`TokenInvalid` field errors are put back on the form with `add_service_errors`.
"""

import datetime

from django import forms
from django.conf import settings
from django.utils import timezone

from domains import permissions
from domains.models import Domain, User
from tokens.services import MAX_GRACE_SECONDS, TokenInvalid

EXPIRY_CUSTOM = "custom"
EXPIRY_CHOICES = [
    ("7", "7 days"),
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "365 days"),
    (EXPIRY_CUSTOM, "Custom date"),
]
DOMAINS_ALL = "all"
DOMAINS_CHOSEN = "chosen"
GRACE_CHOICES = [
    (0, "Immediately"),
    (3600, "After 1 hour"),
    (24 * 3600, "After 24 hours"),
    (MAX_GRACE_SECONDS, "After 7 days"),
]


class TokenCreateForm(forms.Form):
    """Name, expiry, scopes and domains of a new token."""

    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. “CI pipeline”.")
    description = forms.CharField(
        max_length=1000, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    expiry = forms.ChoiceField(choices=EXPIRY_CHOICES, widget=forms.RadioSelect, label="Expires in")
    expiry_date = forms.DateField(
        required=False,
        label="Custom expiry date",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The token stops working at 00:00 UTC on this date.",
    )
    scopes = forms.MultipleChoiceField(
        choices=(), widget=forms.CheckboxSelectMultiple, help_text=""
    )
    domain_access = forms.ChoiceField(
        choices=[(DOMAINS_ALL, "All my domains"), (DOMAINS_CHOSEN, "Only the domains below")],
        widget=forms.RadioSelect,
        initial=DOMAINS_ALL,
        label="Domains",
    )
    domains = forms.ModelMultipleChoiceField(
        queryset=Domain.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Chosen domains",
    )

    def __init__(self, *args, user: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["expiry"].initial = str(settings.CUBEAI_TOKEN_DEFAULT_DAYS)
        # Offer only what the user could hold: the scopes of their roles and their domains.
        # The service checks the chosen scopes against the roles in the chosen domains.
        held: set[str] = set()
        for domain in Domain.objects.for_user(user).prefetch_related("memberships__role"):
            for membership in domain.memberships.all():
                if membership.user_id == user.pk:
                    held |= membership.role.permission_set
        self.fields["scopes"].choices = [(p, p) for p in permissions.ALL if p in held]
        self.fields[
            "scopes"
        ].help_text = "A token never has more rights than your current role in a domain."
        self.fields["domains"].queryset = Domain.objects.for_user(user).order_by("name")
        self.fields["expiry_date"].widget.attrs["min"] = (
            timezone.now().date() + datetime.timedelta(days=1)
        ).isoformat()

    def expires_at(self) -> datetime.datetime | None:
        """The chosen expiry as an aware datetime; None when a custom date is missing."""
        expiry = self.cleaned_data["expiry"]
        if expiry != EXPIRY_CUSTOM:
            return timezone.now() + datetime.timedelta(days=int(expiry))
        date = self.cleaned_data.get("expiry_date")
        if date is None:
            return None
        return datetime.datetime.combine(date, datetime.time(0, 0), tzinfo=datetime.UTC)

    def chosen_domains(self) -> list[Domain] | None:
        """None means every domain of the owner, now and later."""
        if self.cleaned_data["domain_access"] == DOMAINS_ALL:
            return None
        return list(self.cleaned_data["domains"])

    def add_service_errors(self, exc: TokenInvalid) -> None:
        expiry_field = (
            "expiry_date" if self.cleaned_data.get("expiry") == EXPIRY_CUSTOM else "expiry"
        )
        fields = {
            "expires_at": expiry_field,
            "name": "name",
            "scopes": "scopes",
            "domains": "domains",
        }
        for field, messages in exc.errors.items():
            for message in messages:
                self.add_error(fields.get(field), message)


class TokenRotateForm(forms.Form):
    """How long the old secret keeps working after a rotation."""

    grace_seconds = forms.TypedChoiceField(
        choices=GRACE_CHOICES, coerce=int, initial=0, label="Old secret stops working"
    )
