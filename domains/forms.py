"""Forms for sign-up and the domain pages; they check shape, services check the rest."""

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, BaseUserCreationForm
from django.core.exceptions import ValidationError

from cubeai import jsonbody
from domains import permissions, selectors
from domains.models import Domain, Role, User, validate_cors_origins
from tokens import throttle


class SignUpForm(BaseUserCreationForm):
    """Sign up with an email address and a password."""

    class Meta:
        model = User
        fields = ("email", "name")

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email address already exists.")
        return email


class _FailuresLimited:
    """Password sign-in under the per-address limit on failed authentications that the APIs
    share (`tokens.throttle`): an address over it is refused before the password is checked,
    even a right one, and `retry_after` says for how long (`signin_limited` turns that into
    a 429 with `Retry-After`); every failed attempt counts."""

    retry_after: int | None = None

    def clean(self):
        address = (self.request.META.get("REMOTE_ADDR") or "") if self.request else None
        try:
            throttle.auth_failures_check(address=address)
        except throttle.TooManyFailures as exc:
            self.retry_after = exc.retry_after
            raise ValidationError(exc.message, code="too_many_failures") from None
        try:
            return super().clean()
        except ValidationError:
            throttle.auth_failure_record(address=address)
            raise


class SignInForm(_FailuresLimited, AuthenticationForm):
    """Sign in with an email address and a password (`/signin/`)."""


class AdminSignInForm(_FailuresLimited, AdminAuthenticationForm):
    """The admin's sign-in (`/admin/login/`): staff only, under the same limit."""


class DomainCreateForm(forms.ModelForm):
    """Name a new domain and choose its permanent route."""

    class Meta:
        model = Domain
        fields = ("name", "route")
        help_texts = {"route": "Permanent: lowercase letters, digits and hyphens."}

    def clean_route(self) -> str:
        route = self.cleaned_data["route"]
        # Deleted domains keep their route, so the unique check covers them as well.
        if Domain.objects.filter(route=route).exists():
            raise forms.ValidationError("This route is taken.")
        return route


def tags_from_text(text: str) -> list[str]:
    return [tag.strip() for tag in text.split(",") if tag.strip()]


class DomainSettingsForm(forms.Form):
    """Rename a domain and edit its tags and metadata."""

    name = forms.CharField(max_length=100)
    tags = forms.CharField(
        required=False,
        max_length=1100,
        help_text="Comma-separated, at most 20, each 1-50 characters.",
    )
    metadata = jsonbody.JSONFormField(
        required=False, widget=forms.Textarea(attrs={"rows": 5}), help_text="A JSON object."
    )
    cors_origins = forms.CharField(
        label="Allowed browser origins",
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=(
            "One per line, e.g. https://app.example.com: pages of these origins may call "
            "this domain's OpenAI-compatible API from a browser (CORS). None by default."
        ),
    )

    def clean_cors_origins(self) -> list[str]:
        origins = [line.strip() for line in self.cleaned_data["cors_origins"].splitlines()]
        origins = [origin for origin in origins if origin]
        try:
            validate_cors_origins(origins)
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from None
        return origins

    def clean_tags(self) -> list[str]:
        tags = tags_from_text(self.cleaned_data["tags"])
        if len(tags) > 20:
            raise forms.ValidationError("At most 20 tags.")
        if any(len(tag) > 50 for tag in tags):
            raise forms.ValidationError("Each tag has at most 50 characters.")
        return tags

    def clean_metadata(self) -> dict:
        metadata = self.cleaned_data["metadata"]
        if metadata in (None, ""):
            return {}
        if not isinstance(metadata, dict):
            raise forms.ValidationError("Metadata must be a JSON object.")
        return metadata


class DomainStatusForm(forms.Form):
    status = forms.ChoiceField(choices=Domain.Status.choices)

    def __init__(self, *args, staff: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not staff:
            self.fields["status"].choices = [
                (value, label)
                for value, label in Domain.Status.choices
                if value != Domain.Status.FROZEN
            ]


class DomainDeleteForm(forms.Form):
    confirm = forms.CharField(label="Type the domain's route to confirm", max_length=63)

    def __init__(self, *args, domain: Domain, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.domain = domain

    def clean_confirm(self) -> str:
        if self.cleaned_data["confirm"] != self.domain.route:
            raise forms.ValidationError("This is not the domain's route.")
        return self.cleaned_data["confirm"]


class _DomainRoleForm(forms.Form):
    """A form whose role choices are only the built-in roles and this domain's own."""

    role = forms.ModelChoiceField(queryset=Role.objects.none())

    def __init__(self, *args, domain: Domain, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].queryset = selectors.role_list(domain=domain).order_by(
            "domain_id", "name"
        )


class MemberAddForm(_DomainRoleForm):
    email = forms.EmailField(max_length=254)
    field_order = ["email", "role"]


class MemberRoleForm(_DomainRoleForm):
    pass


class InvitationForm(_DomainRoleForm):
    email = forms.EmailField(max_length=254)
    field_order = ["email", "role"]


class RoleForm(forms.Form):
    name = forms.CharField(max_length=50)
    permissions = forms.MultipleChoiceField(
        choices=permissions.CHOICES, required=False, widget=forms.CheckboxSelectMultiple
    )


def apply_service_errors(form: forms.Form, exc) -> None:
    """Show a service's field errors on the form; errors for other fields go on top."""
    errors = getattr(exc, "errors", None) or {exc.param or "__all__": [exc.message]}
    for field, messages in errors.items():
        for message in messages:
            form.add_error(field if field in form.fields else None, message)


class AuditFilterForm(forms.Form):
    """The audit log's filters; every field optional."""

    OUTCOMES = [("", "any"), ("success", "success"), ("failure", "failure")]

    actor = forms.EmailField(required=False, label="Actor (email)")
    action = forms.CharField(required=False, max_length=50)
    start = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    outcome = forms.ChoiceField(choices=OUTCOMES, required=False)

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            self.add_error("end", "The last day must not be before the first.")
        return data

    def filters(self) -> dict:
        """The valid filters, for the selector (none when the form is invalid)."""
        if not self.is_valid():
            return {}
        return {key: value for key, value in self.cleaned_data.items() if value}
