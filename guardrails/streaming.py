"""Output sanitization of a streamed completion, chunk by chunk.

The sanitizer holds back the last `window` characters of what the model has sent. On
each chunk it scans the held text together with the last `window` characters already
emitted (left context for word boundaries), then emits everything that is at least
`window` characters from the end, masked. An entity up to `window` characters long is
therefore complete, with its right context, before any of it can be emitted; a longer
match (a PEM key, a long JWT) is seen by its first characters and held while it grows,
up to `max_hold` characters. A blocking finding ends the stream: nothing more is emitted
and the gateway closes it with `finish_reason: "content_filter"`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from guardrails.base import Action, Finding, Violation, apply_masks, resolve_overlaps

if TYPE_CHECKING:
    from guardrails.pipeline import Pipeline


class StreamSanitizer:
    """Feed it deltas, emit what it returns, call `finish()` at the end of the stream."""

    def __init__(self, pipeline: Pipeline, *, window: int, max_hold: int) -> None:
        self._pipeline = pipeline
        self._window = window
        self._max_hold = max_hold
        self._context = ""
        self._pending = ""
        # Offset in the whole completion of the first pending character.
        self._offset = 0
        self._elapsed_ns = 0
        self.blocked = False
        self.violations: list[Violation] = []

    @property
    def elapsed_ms(self) -> float:
        return self._elapsed_ns / 1e6

    @property
    def finish_reason(self) -> str | None:
        return "content_filter" if self.blocked else None

    def feed(self, delta: str) -> str:
        """Take the next delta; return the text that is now safe to send (maybe "")."""
        if self.blocked:
            return ""
        self._pending += delta
        if len(self._pending) <= self._window:
            return ""
        return self._release(final=False)

    def finish(self) -> str:
        """The end of the stream: return the rest, masked ("" if the stream is blocked)."""
        if self.blocked or not self._pending:
            return ""
        return self._release(final=True)

    def audit(self) -> dict[str, Any]:
        """A summary for the audit event, without any of the text."""
        action = Action.BLOCK if self.blocked else Action.MASK if self.violations else Action.ALLOW
        return {
            "action": str(action),
            "policy": self._pipeline.fingerprint,
            "policy_version": self._pipeline.version,
            "rails": list(self._pipeline.output_rails),
            "elapsed_ms": round(self.elapsed_ms, 3),
            "violations": [violation.to_dict() for violation in self.violations],
        }

    def _release(self, *, final: bool) -> str:
        started = time.perf_counter_ns()
        try:
            return self._release_scanned(final=final)
        finally:
            self._elapsed_ns += time.perf_counter_ns() - started

    def _release_scanned(self, *, final: bool) -> str:
        text = self._context + self._pending
        base = len(self._context)
        found = [(f, rail) for f, rail in self._pipeline.scan_output(text) if f.end > base]
        cut = len(text) if final else len(text) - self._window
        forced = not final and len(self._pending) > self._max_hold
        if not forced:
            # Never cut through a finding: hold it whole until it stops growing.
            moved = True
            while moved:
                moved = False
                for finding, _ in found:
                    if finding.start < cut < finding.end:
                        cut = finding.start
                        moved = True
        if cut <= base:
            return ""
        settled = [(f, rail) for f, rail in found if f.start < cut]
        absolute = self._offset - base
        if any(f.action is Action.BLOCK for f, _ in settled):
            self.blocked = True
            self.violations.extend(
                _located(f, rail, absolute) for f, rail in settled if f.action is Action.BLOCK
            )
            self._pending = ""
            return ""
        # Findings that started in the emitted context, or (when forced) run past the cut,
        # are masked only where they overlap what is being released now.
        masks = [
            replace(f, start=max(f.start, base), end=min(f.end, cut))
            for f, _ in settled
            if f.action is Action.MASK
        ]
        self.violations.extend(_located(f, rail, absolute) for f, rail in settled)
        released = apply_masks(text, resolve_overlaps(masks), base, cut)
        self._context = text[max(0, cut - self._window) : cut]
        self._pending = text[cut:]
        self._offset += cut - base
        return released


def _located(finding: Finding, rail: str, absolute: int) -> Violation:
    return Violation(
        type=finding.type,
        category=finding.category,
        severity=finding.severity,
        action=finding.action,
        rail=rail,
        start=max(finding.start + absolute, 0),
        end=finding.end + absolute,
    )
