"""Guardrails: input validation and output sanitization for every model request.

A library the gateway calls; it has no Django dependency. See guardrails/README.md.
"""

from guardrails.base import Action, Severity, Violation
from guardrails.checks.model import Classification, Classify
from guardrails.decisions import InputDecision, OutputDecision
from guardrails.pipeline import Pipeline
from guardrails.policy import (
    DEFAULT_POLICY,
    CheckSpec,
    Policy,
    PolicyError,
    compile_policy,
    validate_policy,
)
from guardrails.registry import register_check
from guardrails.streaming import StreamSanitizer

__all__ = [
    "DEFAULT_POLICY",
    "Action",
    "CheckSpec",
    "Classification",
    "Classify",
    "InputDecision",
    "OutputDecision",
    "Pipeline",
    "Policy",
    "PolicyError",
    "Severity",
    "StreamSanitizer",
    "Violation",
    "compile_policy",
    "register_check",
    "validate_policy",
]
