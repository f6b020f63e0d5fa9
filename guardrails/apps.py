from django.apps import AppConfig


class GuardrailsConfig(AppConfig):
    """Input validation and output sanitization, with per-domain policies."""

    name = "guardrails"
