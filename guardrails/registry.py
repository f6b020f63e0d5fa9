"""The check classes a policy may name, by dotted path.

A policy is tenant data, so its `NAME`s are looked up here rather than imported: a domain
admin cannot make the platform import an arbitrary module. The platform may add its own
check classes at start-up with `register_check`.
"""

from __future__ import annotations

from guardrails.base import Check
from guardrails.checks.denylist import DenyList
from guardrails.checks.injection import PromptInjection
from guardrails.checks.model import GuardModel
from guardrails.checks.pii import PII
from guardrails.checks.secrets import Secrets
from guardrails.checks.structure import MessageLimits
from guardrails.checks.unicode import UnicodeCheck

CHECKS: dict[str, type[Check]] = {
    f"{cls.__module__}.{cls.__qualname__}": cls
    for cls in (MessageLimits, UnicodeCheck, PromptInjection, Secrets, PII, DenyList, GuardModel)
}


def register_check(cls: type[Check]) -> str:
    """Make `cls` nameable in policies under its dotted path; returns that path."""
    dotted = f"{cls.__module__}.{cls.__qualname__}"
    CHECKS[dotted] = cls
    return dotted


def get_check_class(dotted: str) -> type[Check]:
    try:
        return CHECKS[dotted]
    except KeyError:
        raise ValueError(f"unknown check {dotted!r}; known: {sorted(CHECKS)}") from None
