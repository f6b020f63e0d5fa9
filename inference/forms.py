"""Forms of the inference pages."""

from django import forms
from django.utils import timezone

from inference.usage import MAX_RANGE_DAYS, Period


class ModelAccessForm(forms.Form):
    """A domain's rule for one model: the platform default, allow or deny."""

    ALLOWED = {"default": None, "allow": True, "deny": False}

    model = forms.CharField(max_length=128, widget=forms.HiddenInput)
    access = forms.ChoiceField(
        choices=[("default", "Platform default"), ("allow", "Allow"), ("deny", "Deny")]
    )

    def allowed(self) -> bool | None:
        return self.ALLOWED[self.cleaned_data["access"]]


class UsagePeriodForm(forms.Form):
    """The usage page's time range: the last N days, or from one day to another (UTC)."""

    DAYS = (1, 7, 30, 90, 365)

    days = forms.TypedChoiceField(
        choices=[(days, f"{days} days") for days in DAYS], coerce=int, required=False
    )
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start is None and end is None:
            return data
        today = timezone.localdate()
        end = end or today
        if start is None:
            self.add_error("start", "Choose the first day.")
        elif start > end:
            self.add_error("end", "The last day must not be before the first.")
        elif (end - start).days + 1 > MAX_RANGE_DAYS:
            self.add_error("start", f"At most {MAX_RANGE_DAYS} days.")
        data["end"] = end
        return data

    def period(self):
        """The chosen period; the last 7 days when nothing (or nothing valid) was chosen."""
        if not self.is_valid():
            return Period.last(7)
        data = self.cleaned_data
        if data.get("start"):
            return Period(data["start"], data["end"])
        return Period.last(data.get("days") or 7)


class RequestAuditFilterForm(forms.Form):
    """The per-request audit log's filters; every field optional."""

    actor = forms.EmailField(required=False, label="Caller (email)")
    token = forms.CharField(required=False, max_length=100, label="Token name")
    model = forms.CharField(required=False, max_length=128)
    outcome = forms.ChoiceField(
        choices=[("", "any"), ("success", "success"), ("error", "error"), ("blocked", "blocked")],
        required=False,
    )
    start = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )

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
