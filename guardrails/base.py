"""The vocabulary every check shares: actions, severities, findings, violations, segments.

A check looks at text and returns `Finding`s: a span, what it is, and what to do about it
(mask it with a replacement, or block the whole request). The pipeline turns findings into
`Violation`s, which carry the location but never the matched text, so they can be returned
to clients and written to the audit log as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Action(StrEnum):
    """What a check decided; ordered so that the strictest decision wins."""

    ALLOW = "allow"
    MASK = "mask"
    BLOCK = "block"

    @property
    def rank(self) -> int:
        return _ACTION_RANK[self]


_ACTION_RANK = {Action.ALLOW: 0, Action.MASK: 1, Action.BLOCK: 2}


class Severity(StrEnum):
    """How bad a finding is, for dashboards and audit filters."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Stage(StrEnum):
    """Where a check may run: on the prompt, on the completion, or both."""

    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class Finding:
    """A span of one text that a check wants masked or that blocks the request.

    `replacement` is what masking puts in place of `text[start:end]`; it is ignored when
    `action` is block.
    """

    start: int
    end: int
    type: str
    category: str
    severity: Severity
    action: Action
    replacement: str = ""


@dataclass(frozen=True, slots=True)
class Violation:
    """A finding located in the request, without the matched text."""

    type: str
    category: str
    severity: Severity
    action: Action
    rail: str
    message: int | None = None
    part: int | None = None
    start: int | None = None
    end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "category": self.category,
            "severity": str(self.severity),
            "action": str(self.action),
            "rail": self.rail,
            "message": self.message,
            "part": self.part,
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True, slots=True)
class Segment:
    """One piece of prompt text and where it sits in the request.

    `message` and `part` index into the chat messages (part is None for string content);
    for a completion prompt, `message` indexes the prompt list and `role` is "user".
    """

    message: int
    part: int | None
    role: str
    text: str


class CheckOptions(BaseModel):
    """Base of every check's options: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Check:
    """A guardrail. Subclasses set `name`, `Options`, `stages` and override the hooks.

    `scan(text)` is the text-level hook used on prompts and completions alike;
    `check_request(segments, raw)` sees the whole request for structural checks.
    A check is built once per compiled policy and must be safe to share between requests.
    """

    name: ClassVar[str]
    Options: ClassVar[type[CheckOptions]] = CheckOptions
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.INPUT, Stage.OUTPUT})
    # Roles whose text `scan` sees on input; None means every role.
    roles: frozenset[str] | None = None
    # Model-based checks are async and run only in `Pipeline.acheck_input`.
    is_async: ClassVar[bool] = False

    def __init__(self, options: CheckOptions) -> None:
        self.options = options

    def scan(self, text: str) -> list[Finding]:
        return []

    def check_request(self, segments: Sequence[Segment], raw: Any) -> list[Violation]:
        return []


def resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Sort findings and merge overlapping ones so each character is masked at most once.

    The merged span keeps the first finding's type and replacement, and the strictest
    action, so masking covers every detected entity without double replacement.
    """
    if len(findings) < 2:
        return findings
    ordered = sorted(findings, key=lambda f: (f.start, -f.end))
    merged = [ordered[0]]
    for finding in ordered[1:]:
        last = merged[-1]
        if finding.start < last.end:
            if finding.end > last.end or finding.action.rank > last.action.rank:
                action = max(last.action, finding.action, key=lambda a: a.rank)
                merged[-1] = Finding(
                    last.start,
                    max(last.end, finding.end),
                    last.type,
                    last.category,
                    last.severity,
                    action,
                    last.replacement,
                )
            continue
        merged.append(finding)
    return merged


def apply_masks(
    text: str, findings: Sequence[Finding], start: int = 0, end: int | None = None
) -> str:
    """Return `text[start:end]` with each (sorted, non-overlapping) finding replaced."""
    stop = len(text) if end is None else end
    pieces: list[str] = []
    cursor = start
    for finding in findings:
        begin = max(finding.start, start)
        if begin < cursor or finding.end > stop:
            continue
        pieces.append(text[cursor:begin])
        pieces.append(finding.replacement)
        cursor = finding.end
    pieces.append(text[cursor:stop])
    return "".join(pieces)
