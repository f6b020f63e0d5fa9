"""Forms of the inference pages."""

from django import forms


class ModelAccessForm(forms.Form):
    """A domain's rule for one model: the platform default, allow or deny."""

    ALLOWED = {"default": None, "allow": True, "deny": False}

    model = forms.CharField(max_length=128, widget=forms.HiddenInput)
    access = forms.ChoiceField(
        choices=[("default", "Platform default"), ("allow", "Allow"), ("deny", "Deny")]
    )

    def allowed(self) -> bool | None:
        return self.ALLOWED[self.cleaned_data["access"]]
