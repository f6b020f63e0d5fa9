"""Forms for sign-up and domain creation."""

from django import forms
from django.contrib.auth.forms import BaseUserCreationForm

from domains.models import Domain, User


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
