"""What the pipeline tells the gateway: decisions with headers, error bodies and audits.

Nothing here holds the checked text except the masked request or completion itself;
`audit()` and `error()` carry types, locations and counts only, so they can be logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guardrails.base import Action, Violation

HEADER_MASKED = "x-guardrails-masked"
HEADER_TIME = "x-guardrails-time-ms"


@dataclass(frozen=True, slots=True)
class Decision:
    """Fields and helpers shared by input and output decisions."""

    action: Action
    violations: tuple[Violation, ...]
    # Every rail that ran, in policy order.
    rails: tuple[str, ...]
    elapsed_ms: float
    policy: str
    policy_version: int

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK

    @property
    def masked_rails(self) -> tuple[str, ...]:
        """The rails that changed the text, for the response header."""
        return tuple(dict.fromkeys(v.rail for v in self.violations if v.action is Action.MASK))

    @property
    def violation_types(self) -> tuple[str, ...]:
        return tuple(sorted({v.type for v in self.violations if v.action is not Action.ALLOW}))

    def headers(self) -> dict[str, str]:
        """Response headers: the time spent, and the rails that masked, if any."""
        headers = {HEADER_TIME: f"{self.elapsed_ms:.3f}"}
        masked = self.masked_rails
        if masked:
            headers[HEADER_MASKED] = ",".join(masked)
        return headers

    def audit(self) -> dict[str, Any]:
        """A summary for the audit event, without any of the checked text."""
        return {
            "action": str(self.action),
            "policy": self.policy,
            "policy_version": self.policy_version,
            "rails": list(self.rails),
            "elapsed_ms": round(self.elapsed_ms, 3),
            "violations": [violation.to_dict() for violation in self.violations],
        }


@dataclass(frozen=True, slots=True)
class InputDecision(Decision):
    """The verdict on a request. `payload` is the request with its texts masked (a copy
    when anything was masked), or None when blocked."""

    payload: Any = None

    @property
    def messages(self) -> Any:
        """The masked payload, by the name `check_input`'s callers know it."""
        return self.payload

    def error(self) -> dict[str, Any]:
        """OpenAI's error envelope for the 400 a blocked prompt gets (Azure's convention)."""
        types = ", ".join(self.violation_types)
        return {
            "error": {
                "message": f"The prompt was blocked by the guardrails policy ({types}).",
                "type": "invalid_request_error",
                "param": None,
                "code": "content_filter",
            }
        }


@dataclass(frozen=True, slots=True)
class OutputDecision(Decision):
    """The verdict on a whole completion; `text` is masked, or None when blocked."""

    text: str | None = None

    @property
    def finish_reason(self) -> str | None:
        """`content_filter` when the completion must not be returned, else None."""
        return "content_filter" if self.blocked else None
