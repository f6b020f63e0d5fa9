"""The vocabulary every check shares: actions, severities, findings, violations, segments.

A check looks at text and returns `Finding`s: a span, what it is, and what to do about it
(mask it with a replacement, or block the whole request). The pipeline turns findings into
`Violation`s, which carry the location but never the matched text, so they can be returned
to clients and written to the audit log as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple

import regex
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
    # Where the text sits when it is not a message's content, e.g. `tools[0].function.description`.
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "category": self.category,
            "severity": str(self.severity),
            "action": str(self.action),
            "rail": self.rail,
            "message": self.message,
            "part": self.part,
            "field": self.field,
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True, slots=True)
class Segment:
    """One piece of request text and where it sits (see `guardrails.fields`).

    `message` and `part` index into the chat messages (part is None for string content),
    or into a prompt or input list; both are None for texts outside them (a tool
    definition, a suffix). `path` is the text's place in the JSON body, where masking puts
    the masked text back; `field` names it for violations when it is not message content.
    `role` is who speaks: a message's role, or "user" for every other text from the client.
    """

    message: int | None
    part: int | None
    role: str
    text: str
    path: tuple[str | int, ...] = ()
    field: str | None = None


class Hold(NamedTuple):
    """Where a stream must hold back text: an entity may have begun at `index` and is not
    complete yet. `replacement` and `action` are what its check would do with it."""

    index: int
    replacement: str = ""
    action: Action = Action.MASK


def hold_by_patterns(
    text: str,
    patterns: Iterable[tuple[regex.Pattern[str], str, Action]],
    *,
    timeout: float | None = None,
) -> Hold:
    """The earliest place in `text` where one of `patterns` may match without the match
    being settled: a match the end of the text cut short, one that reaches the very end,
    or a last match that more text could extend (`4111 1111 ` may become a card number).
    `len(text)` if there is none.

    Patterns are compiled with the `regex` package, whose `partial=True` reports matches
    that the end of the text cut short.
    """
    hold = Hold(len(text))
    for pattern, replacement, action in patterns:
        start = _unsettled(pattern, text, timeout)
        if start is not None and start < hold.index:
            hold = Hold(start, replacement, action)
    return hold


# A complete match this close to the end may still be extended by more text (a PEM block
# followed by the start of its END line); farther from it, it is settled.
_EXTENSION = 64


def _unsettled(pattern: regex.Pattern[str], text: str, timeout: float | None) -> int | None:
    """The earliest start of a match of `pattern` that is not settled, or None.

    Matches are tried at every start (`overlapped`), so a greedy candidate cannot hide a
    shorter one that begins inside it.
    """
    size = len(text)
    for match in pattern.finditer(text, partial=True, overlapped=True, timeout=timeout):
        start = match.start()
        if start == size:
            break
        if match.partial or match.end() == size:
            return start
        if match.end() >= size - _EXTENSION and pattern.fullmatch(
            text, start, partial=True, timeout=timeout
        ):
            return start
    return None


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

    def hold(self, text: str) -> Hold:
        """For streams: where an entity `scan` would find may have begun in `text` without
        being complete yet (see `hold_by_patterns`). The default holds nothing."""
        return Hold(len(text))

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
