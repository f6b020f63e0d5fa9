"""Message structure and size limits: the cheapest check, run before any text is scanned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from guardrails.base import Action, Check, CheckOptions, Segment, Severity, Stage, Violation

KNOWN_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class MessageLimitsOptions(CheckOptions):
    max_messages: int = Field(default=512, ge=1)
    max_chars: int = Field(default=400_000, ge=1)
    max_part_chars: int = Field(default=200_000, ge=1)
    max_parts: int = Field(default=128, ge=1)
    roles: tuple[str, ...] = KNOWN_ROLES


class MessageLimits(Check):
    """Refuses malformed messages, unknown roles and requests beyond the size limits."""

    name = "limits"
    Options: ClassVar[type[CheckOptions]] = MessageLimitsOptions
    stages = frozenset({Stage.INPUT})

    def check_request(self, segments: Sequence[Segment], raw: Any) -> list[Violation]:
        options: MessageLimitsOptions = self.options  # type: ignore[assignment]
        violations: list[Violation] = []
        if isinstance(raw, list) and raw and isinstance(raw[0], dict):
            violations.extend(self._check_messages(raw, options))
        elif isinstance(raw, list) and len(raw) > options.max_messages:
            violations.append(self._violation("structure.too_many_messages"))
        total = 0
        for segment in segments:
            size = len(segment.text)
            total += size
            if size > options.max_part_chars:
                violations.append(
                    self._violation("structure.part_too_long", segment.message, segment.part)
                )
        if total > options.max_chars:
            violations.append(self._violation("structure.too_long"))
        return violations

    def _check_messages(
        self, messages: list[dict[str, Any]], options: MessageLimitsOptions
    ) -> list[Violation]:
        violations: list[Violation] = []
        if len(messages) > options.max_messages:
            violations.append(self._violation("structure.too_many_messages"))
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in options.roles:
                violations.append(self._violation("structure.invalid_role", index))
                continue
            content = message.get("content")
            if isinstance(content, list) and len(content) > options.max_parts:
                violations.append(self._violation("structure.too_many_parts", index))
        return violations

    def _violation(
        self, type_: str, message: int | None = None, part: int | None = None
    ) -> Violation:
        return Violation(
            type=type_,
            category="structure",
            severity=Severity.MEDIUM,
            action=Action.BLOCK,
            rail=self.name,
            message=message,
            part=part,
        )
