"""The policy editor: a JSON document and whether the new version takes effect now."""

import json

from django import forms


class PolicyForm(forms.Form):
    """Save a policy document as a new version; the services validate its content."""

    document = forms.CharField(
        label="Policy (JSON)",
        widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "false", "class": "code"}),
        help_text=(
            "A guardrails policy: <code>input</code> and <code>output</code> lists of "
            '<code>{"NAME": ..., "OPTIONS": {...}}</code>. Saving makes a new version; '
            "every unset option is filled in with its default."
        ),
    )
    activate = forms.BooleanField(label="Activate this version now", required=False, initial=True)

    def clean_document(self) -> dict:
        text = self.cleaned_data["document"]
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"This is not valid JSON: {exc}.") from None
        if not isinstance(document, dict):
            raise forms.ValidationError("The policy must be a JSON object.")
        return document

    def add_policy_errors(self, field_errors: list[dict[str, str]]) -> None:
        """Show each of the policy's field errors on the editor, with its path."""
        for error in field_errors:
            self.add_error("document", f"{error['field']}: {error['message']}")
