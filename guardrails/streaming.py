"""Output sanitization of a streamed text, delta by delta.

The sanitizer releases text as soon as no entity the output checks look for can still be
growing through it, and holds back only what may be the beginning of one: each check says
where, in the text seen so far, an entity of its kind may have begun without being
complete yet (`Check.hold`, by partial matching of its patterns). Ordinary prose therefore
passes with at most its last word held, while a secret, an email address or a number split
over many deltas is held until it is whole, then masked in one piece. Scans see the last
`context` characters already released as left context (word boundaries, look-behinds).

A text that stays a possible entity for more than `max_hold` characters (a runaway PEM
block, an endless digit run) is masked conservatively: its placeholder is released once,
and everything that continues it is swallowed until it ends, never released raw. A blocking
finding, or a runaway entity whose check would block it, ends the stream: nothing more is
released and the gateway closes the stream with `finish_reason: "content_filter"`.

`masked` lists the spans of the original text that were replaced (offsets in the whole
streamed text), so log probabilities sent alongside can be masked to match.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from guardrails.base import (
    Action,
    Finding,
    Hold,
    Severity,
    Violation,
    apply_masks,
    resolve_overlaps,
)

if TYPE_CHECKING:
    from guardrails.pipeline import Pipeline

# A runaway entity longer than this many characters ends the stream: holding more would let
# one stream use unbounded memory.
RUNAWAY_LIMIT = 256 * 1024


class StreamSanitizer:
    """Feed it deltas, send what it returns, call `finish()` at the end of the stream."""

    def __init__(self, pipeline: Pipeline, *, context: int, max_hold: int) -> None:
        self._pipeline = pipeline
        self._context_size = context
        self._max_hold = max_hold
        self._context = ""
        self._pending = ""
        # Offset in the whole text of the first pending character.
        self._offset = 0
        # A long held text is scanned again only once it has grown by a quarter, so a
        # growing entity costs linear, not quadratic, time; holding longer is always safe.
        self._next_scan = 0
        # While a runaway entity is being swallowed (its placeholder already sent): the
        # check's hold for it. `_pending` then starts at the entity.
        self._runaway: Hold | None = None
        self._elapsed_ns = 0
        self.blocked = False
        self.violations: list[Violation] = []
        self.masked: list[tuple[int, int]] = []

    @property
    def elapsed_ms(self) -> float:
        return self._elapsed_ns / 1e6

    @property
    def finish_reason(self) -> str | None:
        return "content_filter" if self.blocked else None

    @property
    def released(self) -> int:
        """How many characters of the original text have been dealt with (sent or masked)."""
        return self._offset

    def feed(self, delta: str) -> str:
        """Take the next delta; return the text that is now safe to send (maybe "")."""
        if self.blocked or not delta:
            return ""
        self._pending += delta
        if len(self._pending) < self._next_scan:
            return ""
        return self._timed(final=False)

    def finish(self) -> str:
        """The end of the stream: return the rest, masked ("" if the stream is blocked)."""
        if self.blocked or not self._pending:
            return ""
        return self._timed(final=True)

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

    def _timed(self, *, final: bool) -> str:
        started = time.perf_counter_ns()
        try:
            out = self._swallow(final=final) if self._runaway else self._release(final=final)
            self._next_scan = len(self._pending) + len(self._pending) // 4
            return out
        finally:
            self._elapsed_ns += time.perf_counter_ns() - started

    def _release(self, *, final: bool) -> str:
        text = self._context + self._pending
        base = len(self._context)
        found = [(f, rail) for f, rail in self._pipeline.scan_output(text) if f.end > base]
        hold = Hold(len(text)) if final else self._pipeline.hold_output(text)
        cut = max(hold.index, base)
        # Never cut through a finding: hold it whole until it is settled.
        moved = True
        while moved:
            moved = False
            for finding, _ in found:
                if finding.start < cut < finding.end:
                    cut, moved = max(finding.start, base), True
        settled = [(f, rail) for f, rail in found if f.start < cut]
        if any(f.action is Action.BLOCK for f, _ in settled):
            self._block([(f, rail) for f, rail in settled if f.action is Action.BLOCK], base)
            return ""
        released = self._emit(text, base, cut, settled)
        if final or len(self._pending) <= self._max_hold:
            return released
        # A possible entity has grown past the limit: send its placeholder once and swallow
        # what continues it; if its check would block it, end the stream instead.
        if hold.action is Action.BLOCK:
            self._block_runaway(hold)
            return released
        self._runaway = hold
        return released + hold.replacement

    def _swallow(self, *, final: bool) -> str:
        """Swallow a runaway entity until it ends; what follows it is sanitized again."""
        hold = self._runaway
        if len(self._pending) > RUNAWAY_LIMIT:
            self._block_runaway(hold)
            return ""
        text = self._context + self._pending
        base = len(self._context)
        index = self._pipeline.hold_output(text).index
        ends = [f.end for f, _ in self._pipeline.scan_output(text) if f.start <= base < f.end]
        if index <= base and not (final and ends):
            # Still growing; at the very end, whatever was never completed goes too.
            if final:
                self._drop(len(self._pending), hold)
            return ""
        # It ended, or stopped looking like one: drop it up to the end of the entity that
        # starts where it did (or up to where it stopped), sanitize what follows.
        self._drop(max(ends, default=index) - base, hold)
        self._runaway = None
        return self._release(final=final) if self._pending else ""

    def _emit(self, text: str, base: int, cut: int, settled: list[tuple[Finding, str]]) -> str:
        """Release `text[base:cut]` with its masks applied; keep the rest pending."""
        if cut <= base:
            return ""
        absolute = self._offset - base
        # Findings that started in the released context are masked only where they overlap
        # what is released now.
        masks = resolve_overlaps(
            [
                replace(f, start=max(f.start, base), end=min(f.end, cut))
                for f, _ in settled
                if f.action is Action.MASK
            ]
        )
        self.violations.extend(_located(f, rail, absolute) for f, rail in settled)
        self.masked.extend((f.start + absolute, f.end + absolute) for f in masks)
        released = apply_masks(text, masks, base, cut)
        self._context = text[max(0, cut - self._context_size) : cut]
        self._pending = text[cut:]
        self._offset += cut - base
        return released

    def _drop(self, length: int, hold: Hold) -> None:
        """The first `length` pending characters were replaced by a runaway's placeholder."""
        start = self._offset
        self.masked.append((start, start + length))
        self.violations.append(_runaway_violation(hold, start, start + length))
        self._context = ""
        self._pending = self._pending[length:]
        self._offset += length

    def _block(self, blocking: list[tuple[Finding, str]], base: int) -> None:
        self.blocked = True
        absolute = self._offset - base
        self.violations.extend(_located(f, rail, absolute) for f, rail in blocking)
        self._pending = ""

    def _block_runaway(self, hold: Hold) -> None:
        self.blocked = True
        end = self._offset + len(self._pending)
        self.violations.append(
            _runaway_violation(hold._replace(action=Action.BLOCK), self._offset, end)
        )
        self._pending = ""


def _runaway_violation(hold: Hold, start: int, end: int) -> Violation:
    return Violation(
        type="stream.unbounded_entity",
        category="stream",
        severity=Severity.HIGH,
        action=hold.action,
        rail="stream",
        start=start,
        end=end,
    )


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
