"""The policy editor: a JSON document and whether the new version takes effect now."""

import json

from django import forms

from cubeai import jsonbody


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
            document = jsonbody.loads(text, what="policy")
        except jsonbody.JSONBodyError as exc:
            raise forms.ValidationError(str(exc)) from None
        if not isinstance(document, dict):
            raise forms.ValidationError("The policy must be a JSON object.")
        return document

    def add_policy_errors(self, field_errors: list[dict[str, str]]) -> None:
        """Show each of the policy's field errors on the editor, with its path."""
        for error in field_errors:
            self.add_error("document", f"{error['field']}: {error['message']}")


PII = "guardrails.checks.pii.PII"
SECRETS = "guardrails.checks.secrets.Secrets"
INJECTION = "guardrails.checks.injection.PromptInjection"
PII_ENTITIES = ("email", "phone", "card", "iban", "national_id", "ip")
ACTIONS = [("allow", "allow"), ("mask", "mask"), ("block", "block")]


def _specs(document: dict, name: str) -> list[dict]:
    return [
        spec
        for stage in ("input", "output")
        for spec in document.get(stage, [])
        if spec["NAME"] == name
    ]


class CommonSettingsForm(forms.Form):
    """The settings most domains change, as fields; saving writes them into a copy of the
    policy in force and saves it through the same validation as the JSON editor."""

    secrets = forms.ChoiceField(
        choices=ACTIONS, label="Secrets and API keys", help_text="In prompts and in completions."
    )
    email = forms.ChoiceField(choices=ACTIONS, label="Email addresses")
    phone = forms.ChoiceField(choices=ACTIONS, label="Phone numbers")
    card = forms.ChoiceField(choices=ACTIONS, label="Payment card numbers")
    iban = forms.ChoiceField(choices=ACTIONS, label="IBANs")
    national_id = forms.ChoiceField(choices=ACTIONS, label="National ids")
    ip = forms.ChoiceField(choices=ACTIONS, label="IP addresses")
    injection = forms.BooleanField(label="Block prompt injection", required=False)
    injection_threshold = forms.FloatField(
        label="Injection score threshold",
        required=False,
        help_text="Lower blocks more; 1.0 by default.",
    )
    tokenized_inputs = forms.ChoiceField(
        choices=[("block", "refuse"), ("allow", "allow")],
        label="Token-id prompts (no text to check)",
    )
    activate = forms.BooleanField(label="Activate this version now", required=False, initial=True)

    @classmethod
    def initial_from(cls, document: dict) -> dict:
        """The fields' values as the policy `document` (normalised) sets them."""
        pii = (_specs(document, PII) or [{"OPTIONS": {}}])[0]["OPTIONS"]
        secrets = (_specs(document, SECRETS) or [{"OPTIONS": {"action": "allow"}}])[0]["OPTIONS"]
        injection = _specs(document, INJECTION)
        initial = {entity: pii.get(entity, "allow") for entity in PII_ENTITIES}
        initial.update(
            secrets=secrets.get("action", "mask"),
            injection=bool(injection),
            injection_threshold=injection[0]["OPTIONS"].get("threshold", 1.0) if injection else 1.0,
            tokenized_inputs=document.get("tokenized_inputs", "block"),
            activate=True,
        )
        return initial

    def document(self, current: dict) -> dict:
        """A copy of `current` with these settings written into it."""
        data = self.cleaned_data
        document = json.loads(json.dumps(current))
        document.pop("version", None)
        pii_options = {entity: data[entity] for entity in PII_ENTITIES}
        specs = _specs(document, PII)
        if not specs:
            for stage in ("input", "output"):
                document.setdefault(stage, []).append({"NAME": PII, "OPTIONS": {}})
            specs = _specs(document, PII)
        for spec in specs:
            spec.setdefault("OPTIONS", {}).update(pii_options)
        specs = _specs(document, SECRETS)
        if not specs:
            for stage in ("input", "output"):
                document.setdefault(stage, []).append({"NAME": SECRETS, "OPTIONS": {}})
            specs = _specs(document, SECRETS)
        for spec in specs:
            spec.setdefault("OPTIONS", {})["action"] = data["secrets"]
        document["input"] = [
            spec for spec in document.get("input", []) if spec["NAME"] != INJECTION
        ]
        if data["injection"]:
            threshold = data["injection_threshold"]
            options = {} if threshold is None else {"threshold": threshold}
            document["input"].append({"NAME": INJECTION, "OPTIONS": options})
        document["tokenized_inputs"] = data["tokenized_inputs"]
        return document

    def add_policy_errors(self, field_errors: list[dict[str, str]]) -> None:
        """The validator's errors, on the field they concern where there is one."""
        for error in field_errors:
            path = error["field"].split(".")
            field = path[-1] if path[-1] in self.fields else None
            if field == "threshold" or (field is None and "threshold" in path):
                field = "injection_threshold"
            self.add_error(field, f"{error['field']}: {error['message']}")
