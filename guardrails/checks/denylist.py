"""Per-domain deny lists: banned words and phrases, banned topics, and admin regexes.

Terms and topic keywords are literals, escaped into one precompiled alternation each, so
they cannot backtrack. Admin regexes are vetted by `guardrails.saferegex` when the policy
is saved and run with a time limit; a search that times out blocks the request, because
a deny list that could not be evaluated must not let text through.
"""

from __future__ import annotations

import re
from typing import ClassVar

import regex
from pydantic import Field, field_validator

from guardrails.base import (
    Action,
    Check,
    CheckOptions,
    Finding,
    Hold,
    Severity,
    Stage,
    hold_by_patterns,
)
from guardrails.saferegex import UnsafeRegex, check_pattern, compile_pattern

PLACEHOLDER = "[REDACTED]"
MAX_TERM_LENGTH = 200


def _literal_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    """Whole-word, case-insensitive alternation of literals; longest first so it wins."""
    cleaned = sorted({term.strip() for term in terms if term.strip()}, key=len, reverse=True)
    if not cleaned:
        return None
    body = "|".join(r"\s+".join(re.escape(word) for word in term.split()) for term in cleaned)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


class DenyListOptions(CheckOptions):
    action: Action = Action.BLOCK
    terms: tuple[str, ...] = Field(default=(), max_length=5000)
    # Topic name -> keywords; the name is reported in audits, never the keyword matched.
    topics: dict[str, tuple[str, ...]] = Field(default={}, max_length=100)
    regexes: tuple[str, ...] = Field(default=(), max_length=100)
    regex_timeout_ms: int = Field(default=20, ge=1, le=1000)

    @field_validator("terms")
    @classmethod
    def _short_terms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        too_long = [index for index, term in enumerate(value) if len(term) > MAX_TERM_LENGTH]
        if too_long:
            raise ValueError(
                f"terms at positions {too_long} are longer than {MAX_TERM_LENGTH} characters"
            )
        return value

    @field_validator("topics")
    @classmethod
    def _topic_names(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, keywords in value.items():
            if not re.fullmatch(r"[a-z0-9_-]{1,40}", name):
                raise ValueError(f"topic name {name!r} must be 1-40 of a-z, 0-9, _ and -")
            if any(len(keyword) > MAX_TERM_LENGTH for keyword in keywords):
                raise ValueError(
                    f"topic {name!r} has keywords longer than {MAX_TERM_LENGTH} characters"
                )
        return value

    @field_validator("regexes")
    @classmethod
    def _safe_regexes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems = []
        for index, pattern in enumerate(value):
            try:
                check_pattern(pattern)
            except UnsafeRegex as exc:
                problems.append(f"[{index}]: {exc}")
        if problems:
            raise ValueError("refused regexes " + "; ".join(problems))
        return value


class DenyList(Check):
    """Blocks (or masks as `[REDACTED]`) banned terms, topics and regex matches."""

    name = "denylist"
    Options: ClassVar[type[CheckOptions]] = DenyListOptions
    stages = frozenset({Stage.INPUT, Stage.OUTPUT})

    def __init__(self, options: CheckOptions) -> None:
        super().__init__(options)
        opts: DenyListOptions = options  # type: ignore[assignment]
        self._action = opts.action
        self._terms = _literal_pattern(opts.terms)
        self._topics = [
            (name, pattern)
            for name, keywords in opts.topics.items()
            if (pattern := _literal_pattern(keywords)) is not None
        ]
        self._regexes = [compile_pattern(pattern) for pattern in opts.regexes]
        self._timeout = opts.regex_timeout_ms / 1000
        literals = [self._terms, *(pattern for _, pattern in self._topics)]
        self._holds = [
            (regex.compile(pattern.pattern, pattern.flags), PLACEHOLDER, self._action)
            for pattern in literals
            if pattern is not None
        ] + [(pattern, PLACEHOLDER, self._action) for pattern in self._regexes]

    def hold(self, text: str) -> Hold:
        try:
            return hold_by_patterns(text, self._holds, timeout=self._timeout)
        except TimeoutError:
            # A deny list that could not be evaluated must not let text through.
            return Hold(0, PLACEHOLDER, Action.BLOCK)

    def scan(self, text: str) -> list[Finding]:
        findings: list[Finding] = []
        if self._terms is not None:
            for match in self._terms.finditer(text):
                findings.append(self._finding(match.start(), match.end(), "deny.term"))
        for name, pattern in self._topics:
            for match in pattern.finditer(text):
                findings.append(self._finding(match.start(), match.end(), f"deny.topic.{name}"))
        for pattern in self._regexes:
            try:
                for match in pattern.finditer(text, timeout=self._timeout):
                    if match.end() > match.start():
                        findings.append(self._finding(match.start(), match.end(), "deny.regex"))
            except TimeoutError:
                findings.append(
                    Finding(
                        0, len(text), "deny.regex_timeout", "deny", Severity.MEDIUM, Action.BLOCK
                    )
                )
        return findings

    def _finding(self, start: int, end: int, type_: str) -> Finding:
        return Finding(start, end, type_, "deny", Severity.MEDIUM, self._action, PLACEHOLDER)
