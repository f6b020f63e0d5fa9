"""A guard model (a safety classifier served like any other model) as a check.

The check does not know how to reach the model: it is given an async callable
`classify(text, model) -> (label, score)`, which the gateway binds to its routing (the
guard model is routed like any other model), and calls it under a timeout. When the call times out, raises or no callable was supplied, the
policy's `fail` option decides: "closed" blocks the request, "open" lets it through and
records that the check failed, so audits show it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar, Literal, NamedTuple

from pydantic import Field

from guardrails.base import Action, Check, CheckOptions, Segment, Severity, Stage, Violation


class Classification(NamedTuple):
    """A guard model's answer: a label such as "safe" / "unsafe" and its probability."""

    label: str
    score: float


# `classify(text, model)`: the text to judge and the guard model named in the policy.
Classify = Callable[[str, str], Awaitable[Classification | tuple[str, float]]]


class GuardModelOptions(CheckOptions):
    # The model name the gateway routes to, like any model a domain may use.
    model: str = Field(min_length=1, max_length=200)
    unsafe_labels: tuple[str, ...] = Field(default=("unsafe",), min_length=1)
    threshold: float = Field(default=0.5, ge=0, le=1)
    timeout_ms: int = Field(default=2000, ge=10, le=30_000)
    fail: Literal["open", "closed"] = "closed"
    roles: tuple[str, ...] = ("user", "tool", "function")
    # Only the end of long conversations is classified, where an attack would sit.
    max_chars: int = Field(default=16_000, ge=100)


class GuardModel(Check):
    """Blocks prompts the guard model labels unsafe; fails open or closed per policy."""

    name = "guard_model"
    Options: ClassVar[type[CheckOptions]] = GuardModelOptions
    stages = frozenset({Stage.INPUT})
    is_async = True

    def __init__(self, options: CheckOptions, classify: Classify | None = None) -> None:
        super().__init__(options)
        self.opts: GuardModelOptions = options  # type: ignore[assignment]
        self.classify = classify

    async def acheck(
        self, segments: Sequence[Segment], classify: Classify | None = None
    ) -> list[Violation]:
        """Classify the selected roles' text; returns at most one violation."""
        opts = self.opts
        text = "\n\n".join(s.text for s in segments if s.role in opts.roles)
        if not text:
            return []
        call = classify or self.classify
        if call is None:
            return self._failure("model.unavailable")
        try:
            async with asyncio.timeout(opts.timeout_ms / 1000):
                label, score = await call(text[-opts.max_chars :], opts.model)
        except TimeoutError:
            return self._failure("model.timeout")
        except Exception:
            # Any failure of the backend (connection, bad answer) is the fail-open/closed case;
            # the exception itself may echo the prompt, so it is not recorded.
            return self._failure("model.error")
        if label in opts.unsafe_labels and score >= opts.threshold:
            return [self._violation("model.unsafe", Action.BLOCK, Severity.HIGH)]
        return []

    def _failure(self, type_: str) -> list[Violation]:
        action = Action.BLOCK if self.opts.fail == "closed" else Action.ALLOW
        return [self._violation(type_, action, Severity.MEDIUM)]

    def _violation(self, type_: str, action: Action, severity: Severity) -> Violation:
        return Violation(
            type=type_, category="model", severity=severity, action=action, rail=self.name
        )
